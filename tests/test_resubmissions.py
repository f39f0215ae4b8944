"""How often the workflow resubmits a training job (Snakemake's ``retries``): from the cost estimate
(``spark estimate``, runs/<preset>/estimate.json), as many jobs as the longest run of the stage needs within its
job's time limit less its stop margin, plus one spare; without an estimate, one."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from eval.pipeline.resubmissions import jobs_needed, resubmissions
from eval.pipeline.params import load_params
from spark.config import ConfigError
from spark.engine.run import TrainingConfig

REPO = Path(__file__).resolve().parents[1]
PAPER = load_params(REPO / "configs/paper.yaml")


def estimate(*jobs: tuple[str, float]) -> dict:
    return {"jobs": [{"stage": stage, "run": f"runs/paper/{stage}/resnet50/spark/seed{i}", "hours": hours,
                      "device_hours": 8 * hours} for i, (stage, hours) in enumerate(jobs)]}


def params(stage: str, runtime: int, margin: float | None = None) -> dict:
    p = copy.deepcopy(PAPER)
    p["resources"][stage]["runtime"] = runtime
    if margin is not None:
        p[stage]["stop_margin_s"] = margin
    return p


def test_46_hours_in_24_hour_jobs_with_a_5_minute_margin_take_two_jobs_and_a_spare():
    assert jobs_needed(46, 1440, 300) == 2  # 2760 min / 1435 min per job
    assert resubmissions(params("pretrain", 1440, 300), "pretrain", estimate(("pretrain", 46))) == 2


def test_the_longest_run_of_the_stage_counts_and_other_stages_do_not():
    e = estimate(("pretrain", 10), ("pretrain", 50), ("finetune", 500), ("detection", 1))
    assert resubmissions(params("pretrain", 1440, 300), "pretrain", e) == 3  # 50 h: 3000 / 1435 -> 3 jobs
    assert resubmissions(params("finetune", 4320, 300), "finetune", e) == 7  # 30000 / 4315 -> 7 jobs
    assert resubmissions(params("detection", 60), "detection", e) == 1  # 1 h in 60 min, no margin: 1 job


def test_the_margin_defaults_to_the_training_sections_and_detection_has_none():
    p = params("pretrain", 60)
    p["pretrain"].pop("stop_margin_s", None)
    assert TrainingConfig.stop_margin_s == 300
    assert resubmissions(p, "pretrain", estimate(("pretrain", 1))) == 2  # 60 min in 55-min jobs: 2
    assert resubmissions(params("detection", 60), "detection", estimate(("detection", 1))) == 1


def test_exactly_one_job_of_work_and_a_run_shorter_than_one_job():
    assert jobs_needed(1435 / 60, 1440, 300) == 1
    assert jobs_needed(0.01, 1440, 300) == 1
    assert jobs_needed(0, 1440, 300) == 1


def test_without_an_estimate_or_without_the_stage_in_it_one_spare():
    assert resubmissions(PAPER, "pretrain", None) == 1
    assert resubmissions(PAPER, "detection", estimate(("pretrain", 500))) == 1


def test_a_limit_within_the_margin_is_an_error():
    with pytest.raises(ConfigError, match="no time to train"):
        resubmissions(params("pretrain", 5, 300), "pretrain", estimate(("pretrain", 1)))


def test_the_smoke_and_mini_presets_resubmit_once_without_an_estimate():
    for preset in ("params.yaml", "configs/smoke.yaml"):
        assert resubmissions(load_params(REPO / preset), "pretrain", None) == 1


def training_retries(workdir: Path, params: Path = REPO / "configs/smoke.yaml") -> dict[str, int | None]:
    """The ``retries`` the Snakefile gives each rule, parsed with ``params`` (the smoke preset) in ``workdir``."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=REPO / "Snakefile",
                                config_settings=ConfigSettings(configfiles=[params]),
                                workdir=workdir)._workflow
        return {rule: workflow.get_rule(rule)._restart_times
                for rule in ("prepare", "pretrain", "finetune", "detection", "report")}


def test_the_workflow_sizes_its_training_retries_by_the_estimate(tmp_path, capfd):
    """Without runs/smoke/estimate.json the rules leave retries to --retries (the SLURM profile's 1), and a preset
    of GPU or multi-node jobs is told how to get an estimate (a CPU preset is not); with one, each training rule's
    retries come from it (the smoke preset's 10-minute jobs less the 5-minute default margin: 30 min of
    pretraining take 6 jobs)."""
    assert set(training_retries(tmp_path).values()) == {None}
    assert "spark estimate --params" not in capfd.readouterr().err
    multi_node = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    multi_node["resources"]["pretrain"]["nodes"] = 2
    (tmp_path / "multi-node.yaml").write_text(yaml.safe_dump(multi_node))
    assert set(training_retries(tmp_path, tmp_path / "multi-node.yaml").values()) == {None}
    assert "spark estimate --params" in capfd.readouterr().err
    (tmp_path / "runs/smoke").mkdir(parents=True)
    (tmp_path / "runs/smoke/estimate.json").write_text(json.dumps(estimate(("pretrain", 0.5), ("detection", 0.4))))
    assert training_retries(tmp_path) == {"prepare": None, "pretrain": 6, "finetune": 1, "detection": 3,
                                          "report": None}
