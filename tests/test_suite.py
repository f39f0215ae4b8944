"""The suite's own guarantees: the list of deliberate breakages (tests/mutants.yaml) stays true as the code moves,
and under ``make test`` a missing pipeline dependency fails the run instead of skipping its tests."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mutants import REPO, load

MUTANTS = load()


def _test_functions(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_names_one_line_of_the_code_and_tests_that_exist(mutant):
    mutated = mutant.mutated(REPO)  # exits naming the mutant where `find` is not exactly once in the file
    assert mutated != (REPO / mutant.file).read_text() and mutant.why
    for test in mutant.tests:
        file, _, name = test.partition("::")
        assert (REPO / file).is_file() and file.startswith("tests/test_"), test
        assert name.split("[")[0] in _test_functions(REPO / file), f"{mutant.name}: no test {test}"


@pytest.mark.parametrize("required", [True, False], ids=["make-test", "plain-pytest"])
def test_a_missing_pipeline_dependency_fails_under_make_test_and_is_skipped_elsewhere(tmp_path, required):
    (tmp_path / "test_needs_it.py").write_text(
        "from helpers import require\n\nrequire('a_module_that_is_not_installed')\n\n\ndef test_it():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "SPARK_TESTS_REQUIRE_ALL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), env.get("PYTHONPATH")]))
    if required:
        env["SPARK_TESTS_REQUIRE_ALL"] = "1"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    if required:
        assert result.returncode != 0 and "a_module_that_is_not_installed does not import" in result.stdout
    else:
        assert "1 skipped" in result.stdout and "could not import 'a_module_that_is_not_installed'" in result.stdout
