"""Training curves per arm: a quantity each run of a stage logs (its dvclive history), averaged over the seeds of
each arm (scratch, SparK, an ablation; per model and label regime) with its range, so that the arms compare on one
plot. The report stage writes each as a TSV, which dvc.yaml's top-level plots show, and as a figure."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .tables import Run, init_name

DVCLIVE_METRICS = Path("dvclive/plots/metrics")
COLUMNS = ["step", "arm", "mean", "low", "high", "seeds"]


def arm(run: Run) -> str:
    """The arm a run belongs to, as a plot's legend names it: model, label regime (fine-tuning) and init."""
    regime = [f"{run.branch.regime} labels"] if run.branch.regime else []
    return ", ".join([run.branch.model, *regime, init_name(run.branch.init)])


def arm_curves(runs: list[Run], metric: str) -> pd.DataFrame:
    """Per arm (in the runs' order) and step: the mean over the seeds that logged ``metric`` there, its range over
    them (``low``, ``high``) and their count. A run without the quantity (the k-NN monitor off) adds nothing."""
    frames = []
    for run in runs:
        path = run.path / DVCLIVE_METRICS / f"{metric}.tsv"
        if path.is_file():
            curve = pd.read_csv(path, sep="\t")
            frames.append(pd.DataFrame({"arm": arm(run), "step": curve["step"],
                                        "value": curve[metric.rsplit("/", 1)[-1]]}))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    values = pd.concat(frames, ignore_index=True).groupby(["arm", "step"], sort=False)["value"]
    return values.agg(mean="mean", low="min", high="max", seeds="count").reset_index()[COLUMNS]
