"""The source code each stage runs, as dependencies of its jobs: a code change reruns what it can affect.

:func:`imported_files` follows a stage's entry modules through every project import (statically, imports inside
functions included); the Snakefile adds those files to each job's inputs, and ``dvc.yaml`` lists the same code
as ``deps``, in the folded form of :func:`stage_code` (a test holds the two together). So ``snakemake -n`` and
``dvc status`` name the same jobs after an edit, and an edit to fine-tuning code never reruns a pretraining.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("spark", "eval")

# Every job runs `python -m eval.cli COMMAND`; each command imports its stage's modules inside its function, so of the
# CLI module only the top-level imports are followed, and each stage's own entries are listed here.
CLI = "eval.cli"
STAGE_ENTRIES = {
    "prepare": (CLI, "eval.data.config", "eval.data.prepare"),
    "pretrain": (CLI, "spark.pretrain"),
    "finetune": (CLI, "eval.finetune"),
    "detection": (CLI, "eval.detection.config", "eval.detection.train"),
    "tables": (CLI, "eval.pipeline.dag", "eval.report"),
}
# Stages that depend on all of the project's code: the tables stage validates every section of the params file,
# which imports most of it, and takes seconds to rerun.
WHOLE_PROJECT = ("tables",)


def stage_code(stage: str, root: Path = ROOT) -> list[str]:
    """The stage's code as DVC deps: a folder where the stage imports every file in it, else the files."""
    if stage in WHOLE_PROJECT:
        return list(PACKAGES)
    files = imported_files(STAGE_ENTRIES[stage], root)
    folded = set(files)
    for folder in sorted({str(Path(f).parent) for f in files}, key=lambda d: d.count("/"), reverse=True):
        inside = {p.relative_to(root).as_posix() for p in (root / folder).rglob("*.py")}
        if inside and inside <= folded and folder not in PACKAGES:
            folded = (folded - inside) | {folder}
    return sorted(folded)


def code_files(stage: str, root: Path = ROOT) -> list[str]:
    """The files behind :func:`stage_code`, as the stage's Snakemake inputs."""
    paths = [root / p for p in stage_code(stage, root)]
    return sorted(p.relative_to(root).as_posix() for path in paths for p in (path.rglob("*.py") if path.is_dir()
                                                                            else [path]))


def imported_files(modules: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """Every project file that importing and running ``modules`` may execute, sorted.

    Follows ``import``/``from`` statements anywhere in a file (in the CLI module, its top-level ones only) and the
    ``__init__`` of every package on the way.
    """
    seen: set[str] = set()
    todo = _with_parents(modules)
    while todo:
        path = _module_file(todo.pop(), root)
        if path is None or path in seen:
            continue
        seen.add(path)
        tree = ast.parse((root / path).read_text(), path)
        nodes = tree.body if path == _module_file(CLI, root) else ast.walk(tree)
        todo += _imports(nodes, _package_of(path), root)
    return sorted(seen)


def _imports(nodes: Iterable[ast.AST], package: str, root: Path) -> list[str]:
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names if _module_file(f"{base}.{alias.name}", root)]
    return _with_parents(n for n in names if n.split(".")[0] in PACKAGES)


def _with_parents(names: Iterable[str]) -> list[str]:
    """Each module with its parent packages: importing a.b.c runs a/__init__ and a/b/__init__ first."""
    return [".".join(parts[:i]) for parts in (n.split(".") for n in names) for i in range(1, len(parts) + 1)]


def _module_file(name: str, root: Path) -> str | None:
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def _package_of(path: str) -> str:
    return ".".join(Path(path).with_suffix("").parts[:-1])
