"""Does the suite catch the mistakes that matter? Each entry of ``tests/mutants.yaml`` is a deliberate breakage (one
exact text replaced in one file) and the tests that must notice it. Every mutant is applied to its own scratch copy
of the checkout, its tests run there (the copy's code first on the path, for subprocesses too), and it is *caught*
when they fail. ``make mutants`` runs them all; on demand, not in CI (minutes per mutant).

The list stays true as the code moves: a text that no longer occurs exactly once is an error, so a change that
rewrites a named line updates the list in the same commit. The tests' baseline is ``make test``: they pass there.

    python tests/mutants.py [--only NAME ...] [--list] [--file MUTANTS.yaml]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MUTANTS = REPO / "tests" / "mutants.yaml"
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Mutant:
    name: str
    why: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]

    def mutated(self, root: Path) -> str:
        """The mutated text of ``root / file``; an error where ``find`` does not occur exactly once there."""
        text = (root / self.file).read_text()
        if (count := text.count(self.find)) != 1:
            raise SystemExit(f"mutants: {self.name}: its `find` text occurs {count} times in {self.file} (must be "
                             "once): update tests/mutants.yaml with the change that moved it")
        return text.replace(self.find, self.replace)


def load(path: Path = MUTANTS) -> list[Mutant]:
    entries = yaml.safe_load(path.read_text())
    mutants = []
    for i, entry in enumerate(entries):
        missing = {"name", "why", "file", "find", "replace", "tests"} - set(entry)
        if missing or set(entry) - Mutant.__dataclass_fields__.keys():
            raise SystemExit(f"mutants: entry {i} ({entry.get('name', '?')}): needs exactly the keys name, why, "
                             f"file, find, replace, tests (missing {sorted(missing)})")
        mutants.append(Mutant(**{**entry, "tests": tuple(entry["tests"])}))
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        raise SystemExit("mutants: names must be unique")
    return mutants


def scratch_copy(destination: Path) -> Path:
    """The checkout's tracked and unignored files, as they are now (uncommitted edits included)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def run(mutant: Mutant) -> tuple[str, float, str]:
    """(verdict, seconds, the first failure's line): caught (a test failed), survived (they passed) or error
    (pytest could not run them: collection error, no such test, a fixture or teardown error, timeout)."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        root = scratch_copy(Path(tmp))
        (root / mutant.file).write_text(mutant.mutated(root))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        where = subprocess.run([sys.executable, "-c", "import spark, eval; print(spark.__file__, eval.__file__)"],
                               cwd=root, env=env, capture_output=True, text=True).stdout.split()
        if not where or not all(Path(w).is_relative_to(root) for w in where):
            return "error", 0.0, f"the copy's code is not the one imported ({where})"
        start = time.monotonic()
        try:
            result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                     *mutant.tests], cwd=root, env=env, capture_output=True, text=True,
                                    timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return "error", time.monotonic() - start, f"timed out after {TIMEOUT_S} s"
        seconds = time.monotonic() - start
        lines = result.stdout.splitlines()
        failed = [line for line in lines if line.startswith("FAILED")]
        if result.returncode == 0:
            return "survived", seconds, ""
        if result.returncode == 1 and failed:
            return "caught", seconds, failed[0][:160]
        # an ERROR (a fixture or teardown failing) says nothing about the mutant
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
        return "error", seconds, (errors or [f"pytest exited {result.returncode}"])[0][:160]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--file", type=Path, default=MUTANTS, help="the list (default: tests/mutants.yaml)")
    args = parser.parse_args(argv)
    mutants = load(args.file)
    if args.only:
        unknown = set(args.only) - {m.name for m in mutants}
        if unknown:
            parser.error(f"unknown mutant(s): {', '.join(sorted(unknown))}")
        mutants = [m for m in mutants if m.name in args.only]
    for mutant in mutants:  # every text is checked before the first (slow) run
        mutant.mutated(REPO)
    if args.list:
        for m in mutants:
            print(f"{m.name}: {m.why}\n    {m.file}; caught by {', '.join(m.tests)}")
        return 0
    verdicts = []
    for mutant in mutants:
        verdict, seconds, detail = run(mutant)
        verdicts.append(verdict)
        print(f"{verdict:8} {seconds:6.0f} s  {mutant.name}  {detail}", flush=True)
    summary = {v: verdicts.count(v) for v in ("caught", "survived", "error")}
    print(f"{summary['caught']}/{len(verdicts)} caught, {summary['survived']} survived, {summary['error']} error(s)")
    return 0 if summary["caught"] == len(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
