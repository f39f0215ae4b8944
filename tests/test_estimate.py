"""``spark estimate``: the DAG's training jobs, the work of each, and device-hours from steps timed here."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from eval.cli import main
from eval.estimate import COCO_TRAIN_IMAGES, IMAGENET_TRAIN_IMAGES, Timing, cost, data_sizes, plan
from eval.pipeline.dag import layout
from eval.pipeline.params import load_params
from eval.pipeline.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
SMOKE, PAPER = REPO / "configs/smoke.yaml", REPO / "configs/paper.yaml"


def test_the_jobs_are_the_workflows():
    params = load_params(PAPER)
    jobs, _ = plan(params)
    runs = layout(params)
    assert [job.run for job in jobs] == [
        *(runs.run("pretrain", b) for b in STAGES["pretrain"].branches(params)),
        *(runs.run("finetune", b) for b in STAGES["finetune"].branches(params)),
        *(runs.run("detection", b) for b in STAGES["detection"].branches(params))]
    # Seeds and inits share a timing; models, variants and recipes do not.
    recipes = {job.run: job.recipe for job in jobs}
    assert recipes["runs/paper/finetune/all/convnext_small/scratch/seed0"] == recipes[
        "runs/paper/finetune/all/convnext_small/zero_out/seed0"]
    assert len({job.recipe for job in jobs if job.stage == "pretrain"}) == 8  # 3 models + 5 ablations of ConvNeXt-S
    assert len({job.recipe for job in jobs}) == 8 + 3 + 2


def test_the_paper_schedules_without_data_use_the_published_sizes(tmp_path):
    jobs, sizes = plan(load_params(PAPER, [f"data.root={tmp_path}"]))
    assert (sizes.pretrain, sizes.labelled, sizes.detection) == (
        IMAGENET_TRAIN_IMAGES, IMAGENET_TRAIN_IMAGES, COCO_TRAIN_IMAGES)
    assert all("published size" in source for source in sizes.sources)
    job = {job.run: job for job in jobs}
    r50 = job["runs/paper/pretrain/resnet50/sparse/seed0"]
    assert (r50.devices, r50.device_batch, r50.steps) == (8, 512, 1600 * (IMAGENET_TRAIN_IMAGES // 4096))
    assert r50.images == r50.steps * 4096
    detection = job["runs/paper/detection/convnext_base/sparse/seed0"]
    assert (detection.images, detection.device_batch) == (263_880 * 16, 2)  # the 3x recipe: 36 COCO epochs
    four_nodes = {job.run: job for job in plan(load_params(PAPER, [f"data.root={tmp_path}",
                                                                    "resources.pretrain.nodes=4"]))[0]}
    r50 = four_nodes["runs/paper/pretrain/resnet50/sparse/seed0"]
    assert (r50.devices, r50.device_batch) == (32, 128)  # the authors' 32 GPUs: 8 per node


def test_prepared_manifests_give_the_sizes(tmp_path):
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet/manifest.json").write_text(json.dumps({"layout": {"train": 5000, "val": 100}}))
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco/manifest.json").write_text(json.dumps({"layout": {"train": {"images": 700}}}))
    sizes = data_sizes(load_params(PAPER, [f"data.root={tmp_path}"]))
    assert (sizes.pretrain, sizes.labelled, sizes.detection) == (5000, 5000, 700)
    assert str(tmp_path / "imagenet/manifest.json") in sizes.sources[0]


def test_a_label_fraction_keeps_that_share_of_each_class():
    jobs, sizes = plan(load_params(SMOKE))
    images = {job.run.split("/")[3]: job.images for job in jobs if job.stage == "finetune"}
    # 10 classes x 20 images; low keeps 10 per class: 100 images, 3 batches of 32 per epoch
    assert sizes.labelled == 200 and images == {"all": 6 * 32, "low": 3 * 32}


def test_hours_scale_linearly_with_the_schedule():
    timing = Timing(seconds_per_image=0.5, batch=2, setting="fp32, eager")

    def hours(*overrides: str) -> list[float]:
        return [cost(job, timing)["device_hours"] for job in plan(load_params(SMOKE, overrides))[0]]

    short = hours("pretrain.epochs=2", "finetune.epochs=3", "detection.max_iter=6")
    long = hours("pretrain.epochs=4", "finetune.epochs=6", "detection.max_iter=12")
    assert long == pytest.approx([2 * h for h in short])
    assert all(h > 0 for h in short)


@pytest.mark.slow
def test_estimate_times_the_smoke_preset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["estimate", "--params", str(SMOKE)]) == 0
    result = json.loads((tmp_path / "runs/smoke/estimate.json").read_text())  # where the workflow reads it
    jobs = result["jobs"]
    assert len(jobs) == len(plan(load_params(SMOKE))[0])
    assert result["total_device_hours"] == pytest.approx(sum(job["device_hours"] for job in jobs))
    assert result["distinct_timings"] == len({job["timing"] for job in jobs}) < len(jobs)
    for job in jobs:
        assert math.isfinite(job["seconds_per_image"]) and job["seconds_per_image"] > 0
        assert job["device_hours"] == pytest.approx(job["seconds_per_image"] * job["images"] / 3600)
        assert job["hours"] == pytest.approx(job["device_hours"] / job["devices"])
        assert 1 <= job["timed_batch"] <= job["device_batch"]
        twins = [other for other in jobs if other["timing"] == job["timing"]]
        assert {other["seconds_per_image"] for other in twins} == {job["seconds_per_image"]}
    printed = capsys.readouterr().out
    assert "| total |" in printed and "linear scaling" in printed and "mini-in: 100 pretraining" in printed
