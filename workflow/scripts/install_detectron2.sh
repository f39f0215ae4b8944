#!/usr/bin/env bash
# Install Detectron2 v0.6 (the version the SparK authors used) into the environment of the given python.
#
# Detectron2 is not on PyPI from its authors. Where an official build is already importable (a user's GPU box),
# it is used untouched. Otherwise this builds the v0.6 sdist re-uploaded as `pb1-detectron2==0.6`, patched by
# patch_detectron2.py (see shared/notes/detectron2.md): pure Python, no C++ extension; Mask R-CNN R50-FPN takes
# ROIAlign/NMS from torchvision. Idempotent, ~35 s.
#
# Usage: bash workflow/scripts/install_detectron2.sh PATH/TO/python
set -euo pipefail

PY=${1:?usage: install_detectron2.sh PATH/TO/python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "install_detectron2: $*" >&2; exit 1; }

"$PY" -c "import sys" 2>/dev/null || die "'$PY' is not a working python"
if "$PY" -c "import detectron2" 2>/dev/null; then
    where=$("$PY" -c 'import detectron2; print(detectron2.__file__)')
    echo "install_detectron2: detectron2 already importable ($where), nothing to do"
    exit 0
fi
"$PY" -c "import torch, torchvision" 2>/dev/null || die "install torch and torchvision into '$PY' first"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

# setuptools >= 81 dropped pkg_resources, which detectron2.model_zoo imports. (No ninja: nothing is compiled.)
pip install -q "setuptools<81" wheel || die "could not install the build tools (setuptools<81, wheel)"

# pip >= 26 refuses a PyPI sdist whose optional extra names a direct URL (this one's `all` extra does), even with
# --no-deps; an older pip, run from its wheel, only fetches the archive. Metadata needs torch: no build isolation.
pip download -q --no-deps --only-binary :all: "pip>=23,<26" -d "$WORK/pip" || die "could not fetch a pip<26 wheel"
"$PY" "$(ls "$WORK"/pip/pip-*.whl)/pip" download -q --no-deps --no-build-isolation --no-binary :all: \
    pb1-detectron2==0.6 -d "$WORK/sdist" || die "could not download the sdist pb1-detectron2==0.6 from PyPI"
tar -xzf "$WORK"/sdist/pb1-detectron2-0.6.tar.gz -C "$WORK" || die "could not unpack the sdist"
SRC="$WORK/pb1-detectron2-0.6"

"$PY" "$HERE/patch_detectron2.py" "$SRC" || die "patching the sdist failed (see above)"
# Runtime deps (fvcore, iopath, omegaconf, hydra-core, pycocotools ...) come from the sdist's install_requires.
pip install -q --no-build-isolation "$SRC" || die "pip install of the patched sdist failed (see above)"

"$PY" - <<'PY' || die "detectron2 installed but does not work (see above)"
import detectron2
from detectron2 import model_zoo
from detectron2.evaluation import COCOEvaluator  # noqa: F401  (imports the patched numpy/_C paths)
from detectron2.modeling import build_model  # noqa: F401
model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
print(f"install_detectron2: detectron2 {detectron2.__version__} installed (pure Python, no detectron2._C)")
PY
