"""The source code each stage runs, as dependencies of its jobs: a code change reruns what it can affect.

:func:`imported_files` follows a stage's entry modules through every project import (statically, imports inside
functions included); the Snakefile adds those files to each job's inputs, and ``dvc.yaml`` lists the same code
as ``deps``, in the folded form of :func:`stage_code` (a test holds the two together). So ``snakemake -n`` and
``dvc status`` name the same jobs after an edit, and an edit to fine-tuning code never reruns a pretraining.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path
from typing import Iterable

from .stages import STAGES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("spark", "eval")

# Every job runs `python -m eval.cli STAGE`, which imports the stage's code inside the stage's handler: of the CLI
# and the registry only the top-level imports are followed, and of each stage its handler's and its section's.
CLI, REGISTRY = "eval.cli", "eval.pipeline.stages"


def entry_modules(stage: str) -> tuple[str, ...]:
    """The modules a stage's job starts from: the CLI, the stage's section and what its handler imports."""
    handler = ast.parse(textwrap.dedent(inspect.getsource(STAGES[stage].handler)))
    schema = STAGES[stage].schema
    return (CLI, *([schema.split(":")[0]] if schema else []),
            *dict.fromkeys(_imports(ast.walk(handler), REGISTRY.rsplit(".", 1)[0], ROOT)))


def stage_code(stage: str, root: Path = ROOT) -> list[str]:
    """The stage's code as DVC deps: a folder where the stage imports every file in it, else the files; all of
    it for a stage that reads every section (the report, which takes seconds to rerun)."""
    if STAGES[stage].whole_project:
        return list(PACKAGES)
    files = imported_files(entry_modules(stage), root)
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

    Follows ``import``/``from`` statements anywhere in a file (in the CLI and the registry, their top-level ones
    only) and the ``__init__`` of every package on the way.
    """
    seen: set[str] = set()
    todo = _with_parents(modules)
    while todo:
        path = _module_file(todo.pop(), root)
        if path is None or path in seen:
            continue
        seen.add(path)
        tree = ast.parse((root / path).read_text(), path)
        nodes = tree.body if path in (_module_file(CLI, root), _module_file(REGISTRY, root)) else ast.walk(tree)
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
