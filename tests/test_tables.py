"""Tables from run records: numeric mean and std over seeds in the CSVs (formatted only for reading), paired
differences to the method, the claims table with its verdicts, reference columns, and the report's files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats

from eval import reference
from eval.detection.recipes import RECIPES, paper_schedule
from eval.pipeline.dag import layout
from eval.pipeline.stages import STAGES
from eval.report import report
from eval.tables import RunRecordError, display, load_runs, mean_std

PARAMS = {
    "preset": "unit", "seeds": [0, 1, 2], "pretrain_seed": 0, "models": {"resnet50": {}}, "ablation_models": ["resnet50"],
    "detection_models": ["resnet50"], "ablations": {"zero_out": {"encoder_mode": "zero_out"}},
    "label_regimes": {"all": {}, "low": {"label_fraction": 0.1}}, "ablation_regimes": ["low"],
    "data": {"classification": "imagenet", "detection": "coco"}, "finetune": {}, "detection": {},
}
# top-1 by (regime, init, seed): SparK beats scratch by 2, 1.5, 2.5 points (all labels) and 5, 6, 4 (low labels);
# zero_out beats sparse by exactly 1 on every seed (low labels).
TOP1 = {("all", "scratch"): [78.0, 79.0, 77.0], ("all", "sparse"): [80.0, 80.5, 79.5],
        ("low", "scratch"): [40.0, 41.0, 42.0], ("low", "sparse"): [45.0, 47.0, 46.0],
        ("low", "zero_out"): [46.0, 48.0, 47.0]}


def interval(estimate: float, low: float, high: float, verdict: str) -> dict:
    return {"estimate": estimate, "low": low, "high": high, "n": 256, "verdict": verdict}


# The motivation run's numbers: a pixel and a BN shift above 0, the mask's survival above 0 at all but the finest scale.
MOTIVATION = {
    "pixel_shift": {"zero_out": 0.45, "visible": 0.03, "difference": interval(0.42, 0.37, 0.46, "reproduced")},
    "encoders": {"pretrained": {
        "bn_shift": [{"layer": "bn1", "zero_out": 0.16, "sparse": 0.001,
                      "difference": interval(0.159, 0.13, 0.19, "reproduced")}],
        "mask_survival": [{"reduction": r, "zero_fraction": {"dense": 0.0, "sparse": 1.0},
                           "auroc": {"dense": 1 - d, "sparse": 1.0}, "difference": interval(d, d - 0.05, d + 0.05,
                                                                                            verdict)}
                          for r, d, verdict in ((4, 0.01, "inconclusive"), (8, 0.2, "reproduced"),
                                                (16, 0.15, "reproduced"), (32, 0.25, "reproduced"))]}},
}


def write_runs(root: Path, finetune_missing: bool = False, nan_ap: dict[str, list[int]] | None = None) -> None:
    """The runs of PARAMS; ``nan_ap`` maps an init to the seeds whose detection AP came out NaN (COCO's AP of a
    category without predictions, or a diverged run)."""
    runs = layout(PARAMS)
    for b in STAGES["pretrain"].branches(PARAMS):
        path = root / runs.run("pretrain", b)
        (path / "dvclive/plots/metrics").mkdir(parents=True)
        (path / "metrics.json").write_text(json.dumps({"epoch": 2, "loss": 0.5 + b.seed / 10}))
        (path / "dvclive/plots/metrics/loss.tsv").write_text("step\tloss\n1\t0.9\n2\t0.5\n")
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(path / "reconstruction.png")
        commit = "0123456789abcdef" * 2 + "01234567"
        (path / "run.json").write_text(json.dumps({"git_commit": commit, "params_hash": "h", "seed": b.seed,
                                                   "wall_time_s": 90.0, "hardware": "cpu", "engine": "snakemake",
                                                   "host": "node1"}))
        (path / "train.log").write_text("epoch 2/2  loss 0.5\n")  # run here (the others look pulled)
    for b in STAGES["finetune"].branches(PARAMS):
        if finetune_missing and b.init == "zero_out":
            continue
        path = root / runs.run("finetune", b)
        path.mkdir(parents=True)
        top1 = TOP1[b.regime, b.init][b.seed]
        (path / "metrics.json").write_text(json.dumps({"top1": top1, "top5": 95.0, "ema_top1": top1 + 0.5}))
    for b in STAGES["detection"].branches(PARAMS):
        path = root / runs.run("detection", b)
        path.mkdir(parents=True)
        ap = {"AP": 40.0 + b.seed + (b.init == "sparse") * (b.seed - 1) - (b.init == "supervised"), "AP50": 60.0,
              "AP75": None}
        if b.seed in (nan_ap or {}).get(b.init, []):
            ap["AP"] = math.nan
        (path / "metrics.json").write_text(json.dumps({"bbox": ap, "segm": ap}))
    for b in STAGES["motivation"].branches(PARAMS):
        path = root / runs.run("motivation", b)
        path.mkdir(parents=True)
        (path / "metrics.json").write_text(json.dumps(MOTIVATION))
        for name in STAGES["motivation"].outs:
            if name.endswith(".png"):
                Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path / name)


def test_mean_std_over_seeds():
    assert mean_std([80.0, 81.0]) == pytest.approx((80.5, 0.7071), abs=1e-4)
    mean, std = mean_std([80.0, None])
    assert mean == 80.0 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([None, float("nan")]))
    shown = display(pd.DataFrame({"top-1": [80.5, 80.0, math.nan], "top-1 std": [0.7071, math.nan, math.nan],
                                  "paper": [80.6, math.nan, 1.0], "seeds": [2, 1, 0]}))
    assert shown.to_dict("list") == {"top-1": ["80.50 ± 0.71", "80.00", "—"], "paper": ["80.60", "—", "1.00"],
                                     "seeds": [2, 1, 0]}


def test_report_mirrors_the_paper_tables(tmp_path):
    write_runs(tmp_path)
    out = tmp_path / "results"
    report(PARAMS, out, root=tmp_path)

    imagenet = pd.read_csv(out / "imagenet.csv")
    assert list(zip(imagenet["labels"], imagenet["init"])) == [("all", "scratch"), ("all", "SparK"),
                                                               ("low", "scratch"), ("low", "SparK")]
    assert list(imagenet["top-1"]) == pytest.approx([78.0, 80.0, 41.0, 46.0])  # numbers, not strings
    assert list(imagenet["top-1 std"]) == pytest.approx([1.0, 0.5, 1.0, 1.0])
    assert list(imagenet["EMA top-1"]) == pytest.approx([78.5, 80.5, 41.5, 46.5])
    assert imagenet["paper top-1"].tolist()[:2] == [79.8, 80.6]  # supervised R50 (paper text), SparK README
    assert imagenet["paper top-1"][2:].isna().all() and list(imagenet["seeds"]) == [3] * 4
    assert "78.00 ± 1.00" in (out / "imagenet.md").read_text()

    coco = pd.read_csv(out / "coco.csv")
    assert list(coco["init"]) == ["scratch", "supervised", "SparK"]
    assert list(coco["AP^bb"]) == pytest.approx([41.0, 40.0, 41.0]) and coco["AP^bb_75"].isna().all()
    # the paper has SparK and supervised rows only; the supervised row names its weights
    assert coco["paper AP^bb"].tolist()[1:] == [38.9, 41.6] and coco["paper AP^mk"].tolist()[1:] == [35.4, 37.7]
    assert math.isnan(coco["paper AP^bb"][0])
    assert coco["weights"].tolist() == ["—", "own classifier (fine-tuned from scratch, all labels)", "—"]
    assert coco["schedule"].tolist() == ["1x"] * 3  # the ResNet recipe: the paper's 1x numbers sit beside it

    ablations = pd.read_csv(out / "ablations_resnet50_low.csv")
    assert list(ablations["variant"]) == ["sparse", "zero_out"]
    assert ablations["Δ top-1"][1] == pytest.approx(1.0) and math.isnan(ablations["Δ top-1"][0])
    assert (ablations["Δ 95% low"][1], ablations["Δ 95% high"][1]) == pytest.approx((1.0, 1.0))  # no spread
    assert list(ablations["final pretraining loss"]) == pytest.approx([0.5, 0.5])
    assert "(1 of 3 seeds)" not in (out / "ablations_resnet50_low.md").read_text()  # one pretraining per variant
    assert ablations["paper Δ"].isna().all()  # the paper's rows are ConvNeXt-S's with all labels, not these

    claims = pd.read_csv(out / "claims.csv")
    motivation, claims = claims[claims["images"].notna()], claims[claims["images"].isna()]
    assert list(motivation["verdict"]) == ["reproduced"] * 2 + ["inconclusive"] + ["reproduced"] * 3
    assert list(motivation["difference"]) == pytest.approx([0.42, 0.159, 0.01, 0.2, 0.15, 0.25])
    assert motivation["claim"].iloc[2] == ("The mask pattern survives sparse encoding and fades under zero-outing "
                                           "(scale 1/4, resnet50)")
    assert list(claims["verdict"]) == ["reproduced", "reproduced", *["inconclusive"] * 4, "contradicted"]
    assert list(claims["difference"]) == pytest.approx([2.0, 5.0, 1.0, 0.0, 1.0, 0.0, -1.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # low labels: differences 5, 6, 4 (std 1)
    assert (claims["95% low"][1], claims["95% high"][1]) == pytest.approx((5 - half, 5 + half))
    assert claims["claim"][0] == "SparK > scratch, classification (all labels, resnet50)"
    assert claims["claim"][2] == "SparK > supervised, detection AP^bb (resnet50)"
    assert "SparK 41.6 vs supervised ImageNet 38.9" in claims["paper's evidence"][2]
    assert claims["claim"][3] == "SparK > scratch, detection AP^bb (resnet50)"
    assert claims["claim"][6] == "sparse > zero_out (low labels, resnet50)"
    assert list(claims["seeds"]) == [3] * 7
    for stem in ("claims", "imagenet", "coco", "ablations_resnet50_low", "runs"):
        assert (out / f"{stem}.md").is_file() and "\\begin{tabular}" in (out / f"{stem}.tex").read_text()

    text = (out / "REPORT.md").read_text()
    assert text.index("## Paper claims") < text.index("Table 1: fine-tuning on ImageNet-1K")
    assert "mini benchmark" not in text and "paired t interval" in text and "bootstrap over images" in text
    assert "256 images (bootstrap)" in text and "![" in text and (out / "motivation_resnet50_bn_shift.png").is_file()
    assert len(pd.read_csv(out / "motivation.csv")) == 1 + 1 + 4 * 2
    provenance = pd.read_csv(out / "runs.csv")
    assert len(provenance) == 2 + 3 * 5 + 9 + 1 and set(provenance["git commit"].fillna("—")) == {"0123456789ab", "—"}
    ran_here = provenance["stage"] == "pretrain"
    assert (provenance["pulled"] == "yes").sum() == (~ran_here).sum() and set(provenance["pulled"][ran_here]) == {"no"}
    assert set(provenance["engine"][ran_here]) == {"snakemake"} and set(provenance["host"][ran_here]) == {"node1"}
    assert (out / "pretrain_loss.png").stat().st_size > 0 and (out / "reconstructions.png").stat().st_size > 0
    assert "pretrain_knn.png" not in text and not (out / "pretrain_knn.png").exists()  # no run has the monitor


def test_report_shows_the_knn_monitor_of_the_runs_that_have_it(tmp_path):
    write_runs(tmp_path)
    runs = layout(PARAMS)
    for b in STAGES["pretrain"].branches(PARAMS):
        path = tmp_path / runs.run("pretrain", b)
        metrics = json.loads((path / "metrics.json").read_text())
        (path / "metrics.json").write_text(json.dumps({**metrics, "knn_top1": 30.0, "knn_top1_init": 12.0,
                                                       "knn_epochs": [1, 2]}))
        (path / "dvclive/plots/metrics/knn_top1.tsv").write_text("step\tknn_top1\n1\t20.0\n2\t30.0\n")
    out = tmp_path / "results"
    report(PARAMS, out, root=tmp_path)
    text = (out / "REPORT.md").read_text()
    assert text.index("## Figures") < text.index("![k-NN monitor](pretrain_knn.png)") < text.index("## Runs behind")
    with Image.open(out / "pretrain_knn.png") as figure:
        assert figure.size == (840, 540)  # 7 x 4.5 inches at 120 dpi


@pytest.mark.parametrize("detection, schedule", [
    ({"max_iter": 40_000, "steps": [30_000]}, "—"),  # a shortened 1x is not the paper's 1x
    ({"batch_size": 8}, "—"),
])
def test_paper_ap_sits_only_beside_runs_on_the_papers_schedule(tmp_path, detection, schedule):
    write_runs(tmp_path)
    out = tmp_path / "results"
    report({**PARAMS, "detection": detection}, out, root=tmp_path)
    coco = pd.read_csv(out / "coco.csv", keep_default_na=False, na_values=[""])
    assert coco["schedule"].tolist() == [schedule] * 3
    assert coco["paper AP^bb"].isna().all() and coco["paper AP^mk"].isna().all()


def test_the_reference_pairs_each_backbone_with_the_schedule_of_its_numbers():
    def schedule(arch, recipe):
        named = RECIPES[recipe]
        return paper_schedule(recipe, named.batch_size, named.max_iter, named.steps)

    assert {key for key in reference.COCO_AP} == {(a, arm, schedule(a, a)) for a in ("resnet50", "convnext_base")
                                                  for arm in ("SparK", "supervised")}
    assert (schedule("resnet50", "resnet50"), schedule("convnext_base", "convnext_base")) == ("1x", "3x")


def test_each_value_says_how_many_seeds_it_rests_on(tmp_path):
    """A seed with a non-finite result is left out of a mean and of a claim's pairs, and the tables say so: one
    SparK seed's AP is NaN, then every scratch seed's (no pair left: the claim is inconclusive, not an error)."""
    write_runs(tmp_path, nan_ap={"sparse": [2]})
    out = tmp_path / "results"
    report(PARAMS, out, root=tmp_path)
    coco = pd.read_csv(out / "coco.csv").set_index("init")
    assert coco.loc["SparK", "AP^bb"] == pytest.approx(40.0)  # seeds 0 and 1: 39 and 41
    assert (coco.loc["SparK", "AP^bb seeds"], coco.loc["scratch", "AP^bb seeds"], coco.loc["SparK", "seeds"]) == (2, 3, 3)
    assert "40.00 ± 1.41 (2 of 3 seeds)" in (out / "coco.md").read_text()
    claims = pd.read_csv(out / "claims.csv").set_index("claim")
    detection = claims.loc["SparK > scratch, detection AP^bb (resnet50)"]
    assert (detection["seeds"], detection["seeds run"]) == (2, 3)
    assert "| 2 of 3 (non-finite results left out) |" in (out / "claims.md").read_text()

    write_runs(tmp_path / "all-nan", nan_ap={"scratch": [0, 1, 2]})
    report(PARAMS, out, root=tmp_path / "all-nan")
    claims = pd.read_csv(out / "claims.csv").set_index("claim")
    detection = claims.loc["SparK > scratch, detection AP^bb (resnet50)"]
    assert (detection["seeds"], detection["verdict"]) == (0, "inconclusive") and math.isnan(detection["difference"])
    assert list(claims["verdict"])[:2] == ["reproduced", "reproduced"]  # the other claims stand


def test_a_missing_run_is_named(tmp_path):
    write_runs(tmp_path, finetune_missing=True)
    with pytest.raises(RunRecordError, match=r"runs/unit/finetune/low/resnet50/zero_out/seed0/metrics.json: missing"):
        load_runs(PARAMS, tmp_path)
