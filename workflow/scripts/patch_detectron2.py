"""Make the Detectron2 v0.6 sdist (PyPI ``pb1-detectron2==0.6``) installable with today's torch, numpy and Pillow.

Applies the five fixes verified in ``shared/notes/detectron2.md`` and a sixth (no ``pkg_resources``), nothing
else, and stamps the result with ``PATCH_LEVEL`` (``detectron2.SPARK_REPRO_PATCH_LEVEL``), by which
install_detectron2.sh replaces a build made by an older version of this file. Every fix must match the source it
expects; if the sdist ever changes, this fails naming the fix instead of installing a half-patched copy.

Usage: ``python patch_detectron2.py UNPACKED_SDIST_DIR`` (``--level`` prints ``PATCH_LEVEL``)
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
# Bump when a fix is added or changed: install_detectron2.sh then rebuilds an installed copy of another level.
PATCH_LEVEL = 2
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


def model_zoo_without_pkg_resources(root: Path) -> None:
    """Fix 6: ``model_zoo.get_config_file`` finds its configs with ``pkg_resources``, which setuptools >= 81 no longer
    ships; the configs are package data next to the module (fix 5), so a path relative to the module is the same."""
    path = root / "detectron2/model_zoo/model_zoo.py"
    replace_once(path, "import pkg_resources\n", "", "model-zoo pkg_resources import")
    replace_once(
        path,
        """    cfg_file = pkg_resources.resource_filename(
        "detectron2.model_zoo", os.path.join("configs", config_path)
    )
""",
        """    cfg_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)
""",
        "model-zoo resource_filename",
    )
    leftovers = [str(p.relative_to(root)) for p in sorted((root / "detectron2").rglob("*.py"))
                 if "pkg_resources" in p.read_text()]
    if leftovers:
        raise PatchError(f"pkg_resources: still used in {', '.join(leftovers)}")


def stamp_patch_level(root: Path) -> None:
    """Record ``PATCH_LEVEL`` in the package, for install_detectron2.sh's up-to-date check."""
    replace_once(
        root / "detectron2/__init__.py", '__version__ = "0.6"\n',
        f'__version__ = "0.6"\nSPARK_REPRO_PATCH_LEVEL = {PATCH_LEVEL}  # workflow/scripts/patch_detectron2.py\n',
        "patch level",
    )


def main(argv: list[str]) -> int:
    if argv == ["--level"]:
        print(PATCH_LEVEL)
        return 0
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    for fix in (build_no_extension, optional_c_imports, numpy_builtin_aliases, pillow_bilinear,
                package_model_zoo_configs, model_zoo_without_pkg_resources, stamp_patch_level):
        fix(root)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except PatchError as err:
        sys.exit(f"patch_detectron2: {err}")
