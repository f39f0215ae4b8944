"""Make the Detectron2 v0.6 sdist (PyPI ``pb1-detectron2==0.6``) installable with today's torch, numpy and Pillow.

Applies the five fixes verified in ``shared/notes/detectron2.md``, nothing else. Every fix must match the
source it expects; if the sdist ever changes, this fails naming the fix instead of installing a half-patched copy.

Usage: ``python patch_detectron2.py UNPACKED_SDIST_DIR``
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

# Modules that import the C++ extension at top level; without ``_C`` only their rotated-box, deformable-conv and
# fast-COCOeval paths are lost, none of which Mask R-CNN R50-FPN uses.
OPTIONAL_C_MODULES = (
    "detectron2/layers/deform_conv.py",
    "detectron2/layers/rotated_boxes.py",
    "detectron2/layers/roi_align_rotated.py",
    "detectron2/evaluation/fast_eval_api.py",
)
OPTIONAL_C_IMPORT = """try:
    from detectron2 import _C
except ImportError:  # installed without the C++ extension (no sources in this sdist)
    _C = None
"""
# numpy >= 1.24 removed these aliases of the builtins; the trailing guard keeps np.bool_/np.int64 intact.
NUMPY_ALIAS = re.compile(r"\bnp\.(bool|int|float|str)\b(?![_\d])")


class PatchError(RuntimeError):
    """An expected source pattern is missing: the sdist is not the one these fixes were verified on."""


def replace_once(path: Path, old: str, new: str, fix: str) -> None:
    text = path.read_text()
    if text.count(old) != 1:
        raise PatchError(f"{fix}: expected exactly one '{old.strip()}' in {path}, found {text.count(old)}")
    path.write_text(text.replace(old, new))


def build_no_extension(root: Path) -> None:
    """Fix 1: the sdist ships no ``layers/csrc``, so build no C++ extension (ROIAlign/NMS come from torchvision)."""
    replace_once(root / "setup.py", "ext_modules=get_extensions(),", "ext_modules=[],", "no ext_modules")


def optional_c_imports(root: Path) -> None:
    """Fix 2: make the top-level ``_C`` import optional in the four modules that need it only for unused ops."""
    for module in OPTIONAL_C_MODULES:
        replace_once(root / module, "from detectron2 import _C\n", OPTIONAL_C_IMPORT, "optional _C import")


def numpy_builtin_aliases(root: Path) -> None:
    """Fix 3: ``np.bool/np.int/np.float/np.str`` → the builtins."""
    changed = 0
    for path in sorted((root / "detectron2").rglob("*.py")):
        text = path.read_text()
        new, count = NUMPY_ALIAS.subn(r"\1", text)
        if count:
            path.write_text(new)
            changed += 1
    if not changed:
        raise PatchError("numpy aliases: no np.bool/np.int/np.float/np.str found under detectron2/")


def pillow_bilinear(root: Path) -> None:
    """Fix 4: Pillow >= 10 removed ``Image.LINEAR`` (a default argument, so it breaks at import)."""
    replace_once(
        root / "detectron2/data/transforms/transform.py", "interp=Image.LINEAR", "interp=Image.BILINEAR",
        "Pillow LINEAR",
    )


def package_model_zoo_configs(root: Path) -> None:
    """Fix 5: the configs live inside ``detectron2/model_zoo`` in this sdist; glob them there."""
    if not (root / "detectron2/model_zoo/configs/COCO-InstanceSegmentation").is_dir():
        raise PatchError("model-zoo configs: detectron2/model_zoo/configs/COCO-InstanceSegmentation is missing")
    replace_once(
        root / "setup.py",
        'package_data={"detectron2.model_zoo": get_model_zoo_configs()},',
        'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},',
        "model-zoo configs",
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    for fix in (build_no_extension, optional_c_imports, numpy_builtin_aliases, pillow_bilinear,
                package_model_zoo_configs):
        fix(root)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except PatchError as err:
        sys.exit(f"patch_detectron2: {err}")
