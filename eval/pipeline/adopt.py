"""DVC adopts what a Snakemake run leaves up to date, so that the two engines share one state.

When Snakemake finishes (or stops on an error), every DVC stage whose outputs are all among the outputs Snakemake
holds up to date is committed to ``dvc.lock`` (``dvc commit``: hashes recorded, nothing recomputed). Then
``dvc status`` names only what Snakemake did not run, and a params change reruns under ``dvc repro`` exactly the
stages it touches. DVC reads ``params.yaml``: a run on a params file of other values is not adopted, and says so.
"""
from __future__ import annotations

import os
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
            repo.commit(stage, force=True)
    return f"dvc: adopted {len(adopted)} stage(s) into dvc.lock: {', '.join(adopted) or 'none'}"
