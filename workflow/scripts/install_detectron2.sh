#!/usr/bin/env bash
# Install Detectron2 v0.6 (the version the SparK authors used) into the environment of the given python. The one
# install path of every route: `make setup` (.venv) and the conda env workflow/envs/detectron2.yaml (through its
# post-deploy script).
#
# Detectron2 is not on PyPI from its authors. Where an official build is already importable (a user's GPU box),
# it is used untouched. Otherwise this builds the v0.6 sdist re-uploaded as `pb1-detectron2==0.6`, checked
# against the sha256 recorded below, patched by patch_detectron2.py (see shared/notes/detectron2.md): pure Python,
# no C++ extension, no pkg_resources; Mask R-CNN R50-FPN takes ROIAlign/NMS from torchvision. Its runtime deps
# are pinned by requirements.lock. Idempotent: an up-to-date build is left alone, one made by an older
# patch_detectron2.py (a lower patch level) is replaced. ~35 s.
#
# Usage: bash workflow/scripts/install_detectron2.sh PATH/TO/python
set -euo pipefail

PY=${1:?usage: install_detectron2.sh PATH/TO/python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOCK="$HERE/../../requirements.lock"

# The pin. A new sdist needs a new sha256 here and in workflow/envs/detectron2.post-deploy.sh (the tests check both).
D2_REQUIREMENT="pb1-detectron2==0.6"
D2_SDIST="pb1-detectron2-0.6.tar.gz"
D2_SHA256="5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

die() { echo "install_detectron2: $*" >&2; exit 1; }

"$PY" -c "import sys" 2>/dev/null || die "'$PY' is not a working python"
LEVEL=$("$PY" "$HERE/patch_detectron2.py" --level) || die "could not read the patch level of patch_detectron2.py"

# "ok PATH": usable as it is (an official build, or ours at the current patch level); "outdated PATH": ours, built by
# an older patch_detectron2.py; "absent": not importable.
read -r state where < <("$PY" - "$LEVEL" <<'PY' 2>/dev/null || echo absent
import importlib.metadata as md
import sys

import detectron2

try:
    md.distribution("pb1-detectron2")
except md.PackageNotFoundError:
    state = "ok"  # not built by this script: an official Detectron2, used untouched
else:
    state = "ok" if getattr(detectron2, "SPARK_REPRO_PATCH_LEVEL", 0) == int(sys.argv[1]) else "outdated"
print(state, detectron2.__file__)
PY
)
if [[ $state == ok ]]; then
    echo "install_detectron2: detectron2 already importable ($where), nothing to do"
    exit 0
fi
"$PY" -c "import torch, torchvision" 2>/dev/null || die "install torch and torchvision into '$PY' first"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }
CONSTRAINTS=()
if [[ -f $LOCK ]]; then
    CONSTRAINTS=(-c "$LOCK")
else
    echo "install_detectron2: warning: $LOCK not found, Detectron2's dependencies are not pinned" >&2
fi

# The build runs without isolation (its setup.py imports torch), so setuptools must be here; >= 70.1 builds wheels
# by itself (no `wheel`). Nothing needs pkg_resources (setuptools < 81) any more, at build or at run time.
pip install -q "setuptools>=70.1" || die "could not install the build tool (setuptools>=70.1)"

# pip >= 26 refuses a PyPI sdist whose optional extra names a direct URL (this one's `all` extra does), even with
# --no-deps; an older pip, run from its wheel, only fetches the archive. Metadata needs torch: no build isolation.
# The --hash makes pip check the archive before it runs any of its code (metadata preparation runs setup.py).
pip download -q --no-deps --only-binary :all: "pip>=23,<26" -d "$WORK/pip" || die "could not fetch a pip<26 wheel"
echo "$D2_REQUIREMENT --hash=sha256:$D2_SHA256" > "$WORK/pin.txt"
"$PY" "$(ls "$WORK"/pip/pip-*.whl)/pip" download -q --no-deps --no-build-isolation --no-binary :all: \
    -r "$WORK/pin.txt" -d "$WORK/sdist" \
    || die "could not download $D2_REQUIREMENT from PyPI with sha256 $D2_SHA256 (a hash mismatch is reported above)"

# Verify again, independently of pip, what is about to be unpacked and built.
actual=$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
    "$WORK/sdist/$D2_SDIST") || die "the download has no $D2_SDIST"
[[ $actual == "$D2_SHA256" ]] \
    || die "sha256 mismatch for $D2_SDIST: expected $D2_SHA256, got $actual; refusing to build it"

tar -xzf "$WORK/sdist/$D2_SDIST" -C "$WORK" || die "could not unpack the sdist"
SRC="$WORK/${D2_SDIST%.tar.gz}"

"$PY" "$HERE/patch_detectron2.py" "$SRC" || die "patching the sdist failed (see above)"
# pip always reinstalls from a local directory, so this also replaces an outdated build (once the new one is built).
if [[ $state == outdated ]]; then
    echo "install_detectron2: replacing the pb1-detectron2 at $where, built by an older patch_detectron2.py" \
        "(current patch level: $LEVEL)"
fi
# Runtime deps (fvcore, iopath, omegaconf, hydra-core, pycocotools ...) come from the sdist's install_requires.
pip install -q --no-build-isolation ${CONSTRAINTS[@]+"${CONSTRAINTS[@]}"} "$SRC" \
    || die "pip install of the patched sdist failed (see above)"

"$PY" - <<'PY' || die "detectron2 installed but does not work (see above)"
import sys

import detectron2
from detectron2 import model_zoo
from detectron2.evaluation import COCOEvaluator  # noqa: F401  (imports the patched numpy/_C paths)
from detectron2.modeling import build_model  # noqa: F401

model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
assert not hasattr(sys.modules["detectron2.model_zoo.model_zoo"], "pkg_resources"), "model_zoo imports pkg_resources"
print(f"install_detectron2: detectron2 {detectron2.__version__} installed (pure Python, no detectron2._C, "
      f"patch level {detectron2.SPARK_REPRO_PATCH_LEVEL})")
PY
