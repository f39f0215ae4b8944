"""Result tables laid out like the paper's, from the runs' ``metrics.json`` and ``run.json`` files.

Pure functions from run records to DataFrames (mean ± std over seeds, reference columns from
:mod:`eval.reference`); :mod:`eval.report` writes them as Markdown, CSV and LaTeX.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from . import reference
from .dag import METHOD, SCRATCH, Branch, Layout, detection_branches, finetune_branches, pretrain_branches

MISSING = "—"
COCO_COLUMNS = [("bbox", "AP", "AP^bb"), ("bbox", "AP50", "AP^bb_50"), ("bbox", "AP75", "AP^bb_75"),
                ("segm", "AP", "AP^mk"), ("segm", "AP50", "AP^mk_50"), ("segm", "AP75", "AP^mk_75")]


@dataclass
class Run:
    """One finished run: its branch, directory, metrics and provenance."""

    stage: str
    branch: Branch
    path: Path
    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


def load_runs(params: dict[str, Any], root: str | Path = ".") -> dict[str, list[Run]]:
    """Every branch's run of every stage; a missing ``metrics.json`` is an error naming the file."""
    layout = Layout(str(params["preset"]))
    stages: dict[str, tuple[Callable[[str, str, int], str], Iterable[Branch]]] = {
        "pretrain": (layout.pretrain, pretrain_branches(params)),
        "finetune": (layout.finetune, finetune_branches(params)),
        "detection": (layout.detection, detection_branches(params)),
    }
    runs: dict[str, list[Run]] = {}
    for stage, (path_of, branches) in stages.items():
        runs[stage] = []
        for branch in branches:
            path = Path(root) / path_of(branch.model, branch.init, branch.seed)
            if not (path / "metrics.json").is_file():
                raise FileNotFoundError(f"{path / 'metrics.json'}: missing; run the {stage} stage first")
            info_file = path / "run.json"
            info = json.loads(info_file.read_text()) if info_file.is_file() else {}
            runs[stage].append(Run(stage, branch, path, json.loads((path / "metrics.json").read_text()), info))
    return runs


def mean_std(values: list[float]) -> str:
    """``80.12 ± 0.31`` over seeds (sample std), ``80.12`` for one seed, ``—`` for none."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return MISSING
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _reference(table: dict[str, tuple[float, str]], arch: str) -> str:
    return f"{table[arch][0]:.1f}" if arch in table else MISSING


def _grouped(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.branch.model, run.branch.init), []).append(run)
    return groups


def _init_name(init: str) -> str:
    return "scratch" if init == SCRATCH else ("SparK" if init == METHOD else f"SparK ({init})")


def imagenet_table(finetune: list[Run], archs: dict[str, str]) -> pd.DataFrame:
    """Table 1: top-1/top-5 per model and init (scratch vs SparK), with the paper's SparK top-1."""
    rows = []
    for (model, init), runs in _grouped(finetune).items():
        if init not in (SCRATCH, METHOD):
            continue
        rows.append({
            "model": model,
            "init": _init_name(init),
            "top-1": mean_std([r.metrics["top1"] for r in runs]),
            "top-5": mean_std([r.metrics["top5"] for r in runs]),
            "EMA top-1": mean_std([r.metrics.get("ema_top1") for r in runs]),
            "paper top-1": _reference(reference.IMAGENET_TOP1, archs[model]) if init == METHOD else MISSING,
            "seeds": len(runs),
        })
    return pd.DataFrame(rows)


def coco_table(detection: list[Run], archs: dict[str, str]) -> pd.DataFrame:
    """Table 2: Mask R-CNN box and mask AP per model and init."""
    rows = []
    for (model, init), runs in _grouped(detection).items():
        row: dict[str, Any] = {"model": model, "init": _init_name(init)}
        for task, key, column in COCO_COLUMNS:
            row[column] = mean_std([r.metrics[task][key] for r in runs])
        row["paper AP^bb"] = _reference(reference.COCO_AP, archs[model])
        row["seeds"] = len(runs)
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(pretrain: list[Run], finetune: list[Run], model: str, variants: list[str]) -> pd.DataFrame:
    """Table 3: fine-tuning top-1 of each pretraining variant, and its difference to the full method."""
    top1 = {init: [r.metrics["top1"] for r in runs] for (m, init), runs in _grouped(finetune).items() if m == model}
    loss = {init: [r.metrics["loss"] for r in runs] for (m, init), runs in _grouped(pretrain).items() if m == model}
    base = statistics.mean(top1[METHOD])
    rows = []
    for variant in [METHOD, *variants]:
        delta = statistics.mean(top1[variant]) - base
        rows.append({
            "variant": variant,
            "top-1": mean_std(top1[variant]),
            "Δ top-1": MISSING if variant == METHOD else f"{delta:+.2f}",
            "final pretraining loss": mean_std(loss[variant]),
            "paper Δ": _reference(reference.ABLATION_TOP1, variant),
            "seeds": len(top1[variant]),
        })
    return pd.DataFrame(rows)


def provenance_table(runs: dict[str, list[Run]]) -> pd.DataFrame:
    """Every run behind a table cell: where it is and how it was made."""
    rows = []
    for stage, stage_runs in runs.items():
        for run in stage_runs:
            rows.append({
                "stage": stage,
                "model": run.branch.model,
                "init/variant": run.branch.init,
                "seed": run.branch.seed,
                "run": str(run.path),
                "git commit": str(run.info.get("git_commit", MISSING))[:12],
                "params hash": run.info.get("params_hash", MISSING),
                "wall time (min)": f"{run.info['wall_time_s'] / 60:.1f}" if "wall_time_s" in run.info else MISSING,
                "precision": run.info.get("precision", MISSING),
                "hardware": run.info.get("hardware", MISSING),
            })
    return pd.DataFrame(rows)
