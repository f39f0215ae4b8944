"""The import rules of docs/architecture.md: ``spark`` (the method) never imports ``eval`` (the pipeline), and the
stages (``eval/data``, ``eval/finetune``, ``eval/detection``, ``eval/motivation``) never import ``eval/pipeline``, which builds on them;
the names of the arms live in a leaf module both share."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("eval/data", "eval/finetune", "eval/detection", "eval/motivation")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it, relative imports resolved."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *([node.module] if node.module else [])])
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", files("spark"), ids=lambda p: p.relative_to(REPO).as_posix())
def test_the_method_never_imports_the_pipeline(path):
    assert not {m for m in imported_modules(path) if m == "eval" or m.startswith("eval.")}


@pytest.mark.parametrize("path", [p for folder in STAGES for p in files(folder)],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_a_stage_never_imports_the_dag(path):
    assert not {m for m in imported_modules(path) if m.startswith("eval.pipeline")}


def test_the_arm_names_are_a_leaf():
    assert imported_modules(REPO / "eval/arms.py") == set()


def test_relative_imports_resolve_as_python_does():
    resolved = imported_modules(REPO / "eval/pipeline/stages.py")
    assert {"eval.arms.METHOD", "eval.pipeline.params.branch_config"} <= resolved
