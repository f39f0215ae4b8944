"""Tables from run records: mean ± std over seeds, deltas to the method, reference columns, and the report's files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eval.dag import detection_branches, finetune_branches, layout, pretrain_branches
from eval.report import report
from eval.tables import load_runs, mean_std

PARAMS = {
    "preset": "unit", "seeds": [0, 1], "models": {"resnet50": {}}, "ablation_models": ["resnet50"],
    "detection_models": ["resnet50"], "ablations": {"zero_out": {"encoder_mode": "zero_out"}},
    "data": {"classification": "imagenet", "detection": "coco"}, "finetune": {},
}
TOP1 = {("scratch", 0): 78.0, ("scratch", 1): 79.0, ("sparse", 0): 80.0, ("sparse", 1): 81.0,
        ("zero_out", 0): 77.5, ("zero_out", 1): 78.5}


def write_runs(root: Path, finetune_missing: bool = False) -> None:
    runs = layout(PARAMS)
    for b in pretrain_branches(PARAMS):
        path = root / runs.pretrain(b.model, b.init, b.seed)
        (path / "dvclive/plots/metrics").mkdir(parents=True)
        (path / "metrics.json").write_text(json.dumps({"epoch": 2, "loss": 0.5 + b.seed / 10}))
        (path / "dvclive/plots/metrics/loss.tsv").write_text("step\tloss\n1\t0.9\n2\t0.5\n")
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(path / "reconstruction.png")
        (path / "run.json").write_text(json.dumps({"git_commit": "abc" * 10, "params_hash": "h", "seed": b.seed,
                                                   "wall_time_s": 90.0, "hardware": "cpu"}))
    for b in finetune_branches(PARAMS):
        if finetune_missing and b.init == "zero_out":
            continue
        path = root / runs.finetune(b.model, b.init, b.seed)
        path.mkdir(parents=True)
        top1 = TOP1[b.init, b.seed]
        (path / "metrics.json").write_text(json.dumps({"top1": top1, "top5": 95.0, "ema_top1": top1 + 0.5}))
    for b in detection_branches(PARAMS):
        path = root / runs.detection(b.model, b.init, b.seed)
        path.mkdir(parents=True)
        ap = {"AP": 40.0 + b.seed, "AP50": 60.0, "AP75": None}
        (path / "metrics.json").write_text(json.dumps({"bbox": ap, "segm": ap}))


def test_mean_std_over_seeds():
    assert mean_std([80.0, 81.0]) == "80.50 ± 0.71"
    assert mean_std([80.0]) == "80.00"
    assert mean_std([None, float("nan")]) == "—"


def test_report_mirrors_the_paper_tables(tmp_path):
    write_runs(tmp_path)
    out = tmp_path / "results"
    report(PARAMS, out, root=tmp_path)

    imagenet = pd.read_csv(out / "imagenet.csv")
    assert imagenet.to_dict("records") == [
        {"model": "resnet50", "init": "scratch", "top-1": "78.50 ± 0.71", "top-5": "95.00 ± 0.00",
         "EMA top-1": "79.00 ± 0.71", "paper top-1": "—", "seeds": 2},
        {"model": "resnet50", "init": "SparK", "top-1": "80.50 ± 0.71", "top-5": "95.00 ± 0.00",
         "EMA top-1": "81.00 ± 0.71", "paper top-1": "80.6", "seeds": 2},  # the SparK README's ResNet-50
    ]
    coco = pd.read_csv(out / "coco.csv")
    assert list(coco["AP^bb"]) == ["40.50 ± 0.71"] * 2 and list(coco["AP^bb_75"]) == ["—"] * 2
    ablations = pd.read_csv(out / "ablations_resnet50.csv")
    assert list(ablations["variant"]) == ["sparse", "zero_out"]
    assert list(ablations["Δ top-1"]) == ["—", "-2.50"]
    assert list(ablations["final pretraining loss"]) == ["0.55 ± 0.07"] * 2
    for stem in ("imagenet", "coco", "ablations_resnet50", "runs"):
        assert (out / f"{stem}.md").is_file() and "\\begin{tabular}" in (out / f"{stem}.tex").read_text()

    text = (out / "REPORT.md").read_text()
    assert "Table 1: fine-tuning on ImageNet-1K" in text and "mini benchmark" not in text
    provenance = pd.read_csv(out / "runs.csv")
    assert len(provenance) == 4 + 6 + 4 and set(provenance["git commit"]) == {"abcabcabcabc", "—"}
    assert (out / "pretrain_loss.png").stat().st_size > 0 and (out / "reconstructions.png").stat().st_size > 0


def test_a_missing_run_is_named(tmp_path):
    write_runs(tmp_path, finetune_missing=True)
    with pytest.raises(FileNotFoundError, match=r"runs/unit/finetune/resnet50/zero_out/seed0/metrics.json: missing"):
        load_runs(PARAMS, tmp_path)
