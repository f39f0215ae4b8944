"""Snakemake and DVC on one state: what either engine ran, the other takes as done.

- Snakemake -> DVC (:func:`adopt`): when Snakemake finishes (or stops on an error), every DVC stage whose outputs
  are all among those Snakemake holds up to date is committed to ``dvc.lock`` (``dvc commit``: hashes recorded,
  nothing recomputed). DVC reads ``params.yaml``: a run on a params file of other values is not adopted, and says
  so.
- DVC -> Snakemake (:func:`record_for_snakemake`): a job that ``dvc repro`` ran, in a workspace where Snakemake
  has run, records its outputs in Snakemake's metadata as made with the current params (``snakemake --touch`` on
  them): Snakemake reruns a job whose params changed since it recorded them, and DVC has just rerun it.

Then ``dvc status`` and ``snakemake -n`` name the same work after either engine ran, and after a params change.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

from .params import load_params
from .stages import DEFAULT_PARAMS


def adopt(up_to_date: Iterable[str], params_file: str | Path, params: dict[str, Any], root: str | Path = ".") -> str:
    """Commit to ``dvc.lock`` each DVC stage of ``root`` whose outputs (plots aside: Snakemake does not declare them,
    they must exist) are all in ``up_to_date``, paths relative to ``root``; returns what was done, in one line."""
    root = Path(root).resolve()
    if not (root / ".dvc").is_dir():
        return "dvc: no DVC repository here (no .dvc/): nothing adopted"
    if not (root / DEFAULT_PARAMS).is_file() or load_params(root / DEFAULT_PARAMS) != params:
        return (f"dvc: this run read {params_file}, whose values differ from {DEFAULT_PARAMS}'s (what DVC reads): its "
                f"runs are not adopted into dvc.lock")
    try:
        from dvc.repo import Repo
    except ImportError:
        return "dvc: not installed here: nothing adopted"
    done = {os.path.normpath(path) for path in up_to_date}
    with Repo(str(root)) as repo:
        adopted = [stage.addressing for stage in repo.index.stages if stage.cmd and stage.outs and all(
            Path(out.fs_path).exists() if out.plot else os.path.relpath(out.fs_path, root) in done
            for out in stage.outs)]
        for stage in adopted:
            repo.commit(stage, force=True, relink=False)  # the files stay as they are (mtimes: Snakemake)
    return f"dvc: adopted {len(adopted)} stage(s) into dvc.lock: {', '.join(adopted) or 'none'}"


def record_for_snakemake(outputs: Iterable[str | Path]) -> str | None:
    """Under ``dvc repro`` (DVC_STAGE set), where Snakemake keeps metadata: have Snakemake record ``outputs`` (the
    job's, relative to the repository) as up to date, its hooks off (DVC holds the repository). Returns what was
    done, in one line, or None where there is nothing to do; a failure is reported, never raised: the job is done."""
    root = Path(os.environ.get("DVC_ROOT", "."))
    if "DVC_STAGE" not in os.environ or not any((root / ".snakemake" / "metadata").glob("*")):
        return None
    targets = [str(path) for path in outputs]
    command = [sys.executable, "-m", "snakemake", "--touch", "--no-hooks", "--nolock", "--cores", "1", "--quiet",
               "all", "--", *targets]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"snakemake: could not record {', '.join(targets)} as up to date ({last}); its next run reruns them"
    return f"snakemake: recorded {', '.join(targets)} as up to date (run by dvc repro)"
