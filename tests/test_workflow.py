"""The DAG: Snakemake and DVC describe the same jobs over one params file, the presets expand to the paper's
branches, and the smoke preset runs end to end: interrupted and resumed under Snakemake, adopted by DVC, a
one-branch change rerun under DVC, shared through a DVC remote."""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from eval.detection.config import DetectionConfig
from eval.pipeline.dag import layout
from eval.pipeline.stages import STAGES, training_stages, validate, workflow_params
from eval.pipeline.dvc_yaml import render, render_dvcignore
from eval.pipeline.stage_code import PACKAGES
from eval.pipeline.params import branch_config, load_params
from spark.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRESETS = {"mini": REPO / "params.yaml", "smoke": REPO / "configs/smoke.yaml", "paper": REPO / "configs/paper.yaml"}
WORKFLOW_FILES = ("Snakefile", "workflow", "dvc.yaml", "configs", ".dvcignore", ".gitignore", "spark", "eval")
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "test",
                "GIT_COMMITTER_EMAIL": "test@example.com"}


def checkout(tmp_path: Path, preset: str, edit=None) -> Path:
    """A git + DVC repository with the workflow and the code, and ``params.yaml`` = ``preset`` (optionally edited):
    the stages run the checkout's own code (``python -m`` from its root), which their code deps point at."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    params = yaml.safe_load(PRESETS[preset].read_text())
    if edit:
        edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run([str(BIN / "dvc"), "init", "-q"], root)
    run(["git", "add", "-A"], root)  # a clone has commits (dvclive cannot log in a repository without one)
    run(["git", "commit", "-qm", "checkout"], root)
    return root


def run(command: list[str], cwd: Path, timeout: float = 900, stdout_only: bool = False) -> str:
    env = {**os.environ, **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout if stdout_only else result.stdout + result.stderr


def snakemake_jobs(root: Path) -> list[dict]:
    """Every job of a forced dry run: rule, inputs, outputs and shell command (without its log redirection)."""
    text = run([str(BIN / "snakemake"), "-n", "--forceall", "-p", "--cores", "1"], root)
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if not rule or rule.group(1) == "all":
            continue
        field = {k: re.search(rf"^\s+{k}: (.*)$", block, re.M) for k in ("input", "output")}
        shell = re.search(r"^Shell command: (.*)$", block, re.M).group(1)
        jobs.append({
            "rule": rule.group(1),
            "inputs": set(field["input"].group(1).split(", ")) if field["input"] else set(),
            "outputs": set(field["output"].group(1).split(", ")),
            "cmd": shlex.split(shell.split(" > ")[0]),
        })
    return jobs


def dvc_stages(root: Path) -> list[dict]:
    """Every DVC stage: name, dependencies (folders as their files, as Snakemake lists them), outputs, command."""
    from dvc.repo import Repo

    def files(dep: Path) -> set[str]:
        code_folder = dep.is_dir() and dep.relative_to(root).parts[0] in PACKAGES
        code = dep.rglob("*.py") if code_folder else [dep]
        return {str(p.relative_to(root)) for p in code}

    with Repo(str(root)) as repo:
        return [{
            "name": stage.name,
            "deps": set().union(*(files(Path(d.fs_path)) for d in stage.deps if not hasattr(d, "params"))),
            "outputs": {str(Path(o.fs_path).relative_to(root)) for o in stage.outs if not o.plot},
            "cmd": shlex.split(stage.cmd),
        } for stage in repo.index.stages]


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    """``described(preset)``: the Snakemake jobs and DVC stages of a checkout of ``preset``, each preset read once
    per module (they take seconds; the tests only read them)."""
    cache = {}

    def describe(preset: str) -> tuple[list[dict], list[dict]]:
        if preset not in cache:
            root = checkout(tmp_path_factory.mktemp(preset), preset)
            cache[preset] = snakemake_jobs(root), dvc_stages(root)
        return cache[preset]

    return describe


@pytest.mark.parametrize("preset", PRESETS)
def test_snakemake_and_dvc_describe_the_same_jobs(preset, described):
    jobs, stages = described(preset)
    assert len(jobs) == len(stages)
    by_outputs = {frozenset(s["outputs"]): s for s in stages}
    for job in jobs:
        stage = by_outputs.get(frozenset(job["outputs"]))
        assert stage is not None, f"no DVC stage writes {sorted(job['outputs'])}"
        assert job["cmd"] == stage["cmd"], stage["name"]
        if job["rule"] == "report":  # DVC cannot list a variable number of files: it depends on their folders
            assert all(any(Path(i).is_relative_to(d) for d in stage["deps"]) for i in job["inputs"])
        else:
            assert job["inputs"] == stage["deps"], stage["name"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_branch_expands_to_one_job_per_stage(preset, described):
    params = load_params(PRESETS[preset])
    jobs = Counter(job["rule"] for job in described(preset)[0])
    ablation_branches = len(params["ablation_models"]) * len(params["ablations"])
    per_seed = sum(2 * len(params["models"]) + ablation_branches * (regime in params["ablation_regimes"])
                   for regime in params["label_regimes"])  # scratch + SparK per model, ablations where asked
    assert jobs == {
        "prepare": 1,
        "pretrain": len(params["models"]) + ablation_branches,  # once, with pretrain_seed
        "finetune": per_seed * len(params["seeds"]),
        "detection": 3 * len(params["detection_models"]) * len(params["seeds"]),  # scratch, supervised, SparK
        "motivation": len(params["models"]),  # once per pretrained encoder
        "report": 1,
    }
    assert jobs["pretrain"] == len(list(STAGES["pretrain"].branches(params)))
    assert jobs["finetune"] == len(list(STAGES["finetune"].branches(params)))
    assert jobs["detection"] == len(list(STAGES["detection"].branches(params)))


def test_paper_dry_run_lists_every_job_without_the_data(tmp_path):
    assert not Path(load_params(PRESETS["paper"])["pretrain"]["data"]).exists()
    root = checkout(tmp_path, "mini")  # Snakemake keeps its state in .snakemake/ of the directory it runs in
    text = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--configfile", "configs/paper.yaml"], root)
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", text, re.M))
    assert stats == {"all": "1", "prepare": "1", "pretrain": "8", "finetune": "11", "detection": "6",
                     "motivation": "3", "report": "1", "total": "31"}
    for arch in ("resnet50", "convnext_base"):
        assert f"runs/paper/pretrain/{arch}/sparse/seed0/encoder.pth" in text
        assert f"runs/paper/detection/{arch}/supervised/seed0/metrics.json" in text  # published weights: no input
    for variant in ("sparse", "zero_out", "loss_all", "single_scale", "decoder_depth_1", "decoder_depth_3"):
        assert f"runs/paper/pretrain/convnext_small/{variant}/seed0/encoder.pth" in text  # the ablation model
        assert f"runs/paper/finetune/all/convnext_small/{variant}/seed0/metrics.json" in text
    assert "runs/paper/finetune/all/convnext_small/scratch/seed0/metrics.json" in text  # "not pretrained"
    params = load_params(PRESETS["paper"])
    schedules = {m: branch_config(params, DetectionConfig, model=m).paper_schedule for m in params["detection_models"]}
    assert schedules == {"resnet50": "1x", "convnext_base": "3x"}


def test_dvc_yaml_is_generated_from_the_layout(described):
    """dvc.yaml is current, and the run directories DVC expands from it are the Layout's, branch for branch."""
    assert (REPO / "dvc.yaml").read_text() == render(), "dvc.yaml is stale: regenerate it with `make dvc.yaml`"
    assert (REPO / ".dvcignore").read_text() == render_dvcignore(), ".dvcignore is stale: `make dvc.yaml`"
    params = load_params(PRESETS["mini"])
    expected = [layout(params).run(stage.name, b) for stage in training_stages() for b in stage.branches(params)]
    expanded = [str(Path(o).parent) for s in described("mini")[1] for o in s["outputs"]
                if o.endswith("/metrics.json")]
    assert sorted(expanded) == sorted(expected)


def test_params_are_checked_up_front_naming_the_key(tmp_path):
    for path in PRESETS.values():
        validate(load_params(path))
    params = load_params(PRESETS["smoke"])
    bad = [
        ({"ablations": {**params["ablations"], "sparse": {"loss_on": "all"}}}, "params: ablations.sparse: reserved"),
        ({"ablation_models": ["resnet99"]}, "params: ablation_models: 'resnet99' is not in models"),
        ({"ablations": {"bad": {"mask_ratio": 1.5}}}, "params: pretrain.mask_ratio: must be in (0, 1)"),
        ({"models": {"resnet_nope": {}}, "ablation_models": [], "detection_models": []}, "pretrain.arch"),
        ({"finetune": {**params["finetune"], "data": "elsewhere"}}, "params: finetune.data: elsewhere is not where"),
        ({"pretrain": {**params["pretrain"], "knn_data": "elsewhere"}}, "params: pretrain.knn_data: elsewhere is not"),
        ({"resources": {"pretrain": {"gpus": -1}}}, "params: resources.pretrain.gpus"),
        ({"seeds": [0, 0]}, "params: seeds: repeated seed"),
        ({"ablation_regimes": ["few"]}, "params: ablation_regimes: 'few' is not in label_regimes"),
        ({"label_regimes": {"low": {"label_fraction": 0}}}, "params: finetune.label_fraction: must be in (0, 1]"),
        ({"label_regimes": {"low": "10%"}}, "params: label_regimes.low: expected a mapping"),
        ({"pretrain_seed": -1}, "params: pretrain_seed: must be >= 0, got -1"),
        ({"models": {}}, "params: models: expected a mapping of model names"),
        ({"preset": "a/b"}, "params: preset: expected a name"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate({**params, **change})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    assert workflow_params([path], params) == (str(path), params)
    assert workflow_params([], {}, default=path)[0] == str(path)
    with pytest.raises(ConfigError, match="--config overrides are not supported"):
        workflow_params([path], {**params, "preset": "other"})


def finite_table(path: Path, rows: int, columns: list[str]) -> pd.DataFrame:
    """The CSV has ``rows`` rows and finite numbers in ``columns`` (means; stds and intervals need 2+ seeds)."""
    table = pd.read_csv(path)
    assert len(table) == rows, table
    numbers = table[columns].to_numpy(dtype=float)
    assert numbers.size and all(math.isfinite(v) for v in numbers.ravel()), table
    return table


def check_tables(root: Path, params: dict) -> None:
    results = root / "results" / params["preset"]
    regimes = list(params["label_regimes"])
    imagenet = finite_table(results / "imagenet.csv", 2 * len(regimes), ["top-1", "top-5", "EMA top-1"])
    assert list(zip(imagenet["labels"], imagenet["init"])) == [(r, i) for r in regimes for i in ("scratch", "SparK")]
    coco = finite_table(results / "coco.csv", 3, ["AP^bb", "AP^bb_50", "AP^mk", "AP^mk_50"])
    assert list(coco["init"]) == ["scratch", "supervised", "SparK"]
    for regime in params["ablation_regimes"]:
        ablations = finite_table(results / f"ablations_resnet18_{regime}.csv", 1 + len(params["ablations"]),
                                 ["top-1", "final pretraining loss"])
        assert list(ablations["variant"]) == ["sparse", *params["ablations"]]
    motivation = len(params["models"]) * (1 + 1 + 4)  # the pixel shift, the stem's BN, four scales (a ResNet)
    claims = finite_table(results / "claims.csv", len(regimes) + 4 + len(params["ablations"]) *
                          len(params["ablation_regimes"]) + motivation, ["difference"])
    assert set(claims["verdict"]) <= {"reproduced", "contradicted", "inconclusive"}
    report = (results / "REPORT.md").read_text()
    assert report.count("| pretrain ") == len(list(STAGES["pretrain"].branches(params)))
    assert (results / "pretrain_loss.png").stat().st_size > 0
    assert (results / "motivation_resnet18_mask_survival.png").stat().st_size > 0


def check_looking_at_results(root: Path, params: dict) -> None:
    """After the run: Snakemake's report holds every table (rendered) and figure of the results folder in its
    category, with its caption; `dvc plots show` draws one plot per stage and quantity, each with every arm."""
    run([str(BIN / "snakemake"), "--report", "report.html"], root)
    page = (root / "report.html").read_text()
    exhibits = json.loads((root / "results/smoke/exhibits.json").read_text())
    tables = ["claims", "imagenet", "coco", *(f"ablations_resnet18_{r}" for r in params["ablation_regimes"]),
              "motivation", "runs"]
    curves = [f"{s.name}_{c.metric.replace('/', '_')}" for s in training_stages() for c in s.curves]
    figures = ["claims_forest", "reconstructions", "pretrain_knn", *curves,
               *(f"motivation_resnet18_{n.removesuffix('.png')}" for n in STAGES["motivation"].outs if ".png" in n)]
    assert set(exhibits) == {f"{t}.html" for t in tables} | {f"{f}.png" for f in figures}
    categories = json.loads(re.search(r"var categories = (\{.*?\});", page).group(1))
    assert {name: {Path(p).name for files in sub.values() for p in files} for name, sub in categories.items()} == {
        category: {n for n, e in exhibits.items() if e["category"] == category}
        for category in ("Claims", "Paper tables", "Motivation", "Training curves", "Pretraining", "Runs")}
    results = json.loads(re.search(r"var results = (\{.*?\});\n", page).group(1))
    for path, result in results.items():
        assert result["caption"].startswith("<p>" + exhibits[Path(path).name]["caption"][:40]), path
        assert "Made by the smoke preset" in result["caption"], path
    assert results["results/smoke/coco.html"]["mime_type"] == "text/html"  # rendered, not raw CSV

    shown = json.loads(run([str(BIN / "dvc"), "plots", "show", "--json"], root, stdout_only=True))["data"]
    arms = {"finetune_top1": {f"resnet18, {r} labels, {i}" for r in params["label_regimes"]
                              for i in ("scratch", "SparK")} | {"resnet18, low labels, SparK (zero_out)"},
            "pretrain_loss": {"resnet18, SparK", "resnet18, SparK (zero_out)"},
            "detection_bbox_AP": {"resnet18, scratch", "resnet18, supervised", "resnet18, SparK"}}
    for curve in curves:
        plot, = shown[curve]
        drawn = {point["arm"] for point in plot["content"]["data"]["values"]}
        assert drawn == arms.get(curve, drawn) and drawn, curve
        assert plot["content"]["encoding"]["color"]["field"] == "arm"


def one_ablation(params: dict) -> None:
    """The smoke DAG with one of its five ablations (each adds a pretraining and a fine-tuning): the engines'
    behaviour does not depend on how many there are, and CI's time does."""
    params["ablations"] = {"zero_out": params["ablations"]["zero_out"]}


def two_epochs(params: dict) -> None:
    one_ablation(params)
    params["pretrain"]["epochs"] = 2  # so that a pretraining job has a checkpoint to resume mid-run


def terminal_signals() -> None:
    """In the child, before exec: Ctrl-C's default action, as in a terminal. A runner started in the background by
    a shell without job control (nohup, ``cmd &`` in a script) ignores SIGINT, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted_runs(root: Path) -> list[Path]:
    """Pretraining run directories that hold a checkpoint but no result yet: runs caught mid-way."""
    checkpoints = root.glob("runs/*/pretrain/*/*/seed*/checkpoint.pth")
    return [c.parent for c in checkpoints if not (c.parent / "encoder.pth").exists()]


@pytest.mark.slow
@pytest.mark.detectron2
def test_smoke_dag_under_snakemake_survives_ctrl_c(tmp_path):
    """Ctrl-C as soon as any pretraining job (whichever Snakemake scheduled first) has checkpointed mid-run; the
    rerun keeps finished stages and resumes exactly the runs that were caught mid-way, and DVC adopts what it
    finished. The DAG up to the pretrainings (``--until pretrain``): what lies downstream runs end to end in the DVC
    test."""
    from helpers import kill_tree, tail
    from spark.io import load_torch

    root = checkout(tmp_path, "smoke", two_epochs)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [str(BIN / "snakemake"), "--cores", "2", "--until", "pretrain"]
    output = tmp_path / "snakemake.log"  # shown when the test fails
    with output.open("w") as sink:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=terminal_signals)
    deadline = time.monotonic() + 900
    try:
        while not interrupted_runs(root):
            if process.poll() is not None:
                pytest.fail(f"snakemake exited ({process.returncode}) before any pretraining checkpoint:\n"
                            f"{tail(output)}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"no pretraining job checkpointed within 900 s:\n{tail(output)}", pytrace=False)
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole foreground group
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"snakemake still running 120 s after Ctrl-C:\n{tail(output)}", pytrace=False)
    finally:
        if process.poll() is None:  # the test failed: leave no job running
            kill_tree(process)
    assert process.returncode != 0, f"snakemake completed the DAG despite Ctrl-C:\n{tail(output)}"
    # Caught mid-way: a run that Ctrl-C stopped during its last epoch, its epoch-1 checkpoint kept and no result.
    interrupted = {run_dir: load_torch(run_dir / "checkpoint.pth")["epoch"] for run_dir in interrupted_runs(root)}
    mid_way = [run_dir for run_dir, epoch in interrupted.items() if epoch < 2]
    assert mid_way, f"no pretraining run was stopped between its epoch-1 checkpoint and its end: {interrupted}"
    manifest = root / "data/smoke/mini-in/manifest.json"
    prepared = manifest.stat().st_mtime_ns
    finished = {path: path.stat().st_mtime_ns for path in root.glob("runs/smoke/pretrain/**/encoder.pth")}

    run(command, root)
    assert manifest.stat().st_mtime_ns == prepared  # finished stages were kept, not redone
    assert {path: path.stat().st_mtime_ns for path in finished} == finished
    for run_dir, epoch in interrupted.items():  # each resumed from its checkpoint and trained the rest once
        # Appended to by every attempt; an epoch's line follows its checkpoint, so Ctrl-C may fall between them.
        before, resumed = re.split(rf"resuming \S+ after epoch {epoch}/2\b", (run_dir / "train.log").read_text())
        trained = [[int(e) for e in re.findall(r"epoch (\d)/2  loss", text)] for text in (before, resumed)]
        assert trained[0] in (list(range(1, epoch)), list(range(1, epoch + 1))), run_dir
        assert trained[1] == list(range(epoch + 1, 3)), run_dir
    params = load_params(root / "params.yaml")
    assert len(list(root.glob("runs/smoke/pretrain/**/encoder.pth"))) == len(list(STAGES["pretrain"].branches(params)))
    assert re.search(r"^total\s+0$", run(command, root), re.M)  # no job left

    # DVC adopted what Snakemake left up to date (dvc.lock): prepare and the pretrainings, and nothing downstream.
    def dvc_changed() -> set[str]:
        return set(re.findall(r"^(\S+):$", run([str(BIN / "dvc"), "status"], root), re.M))

    changed = dvc_changed()
    assert not {s for s in changed if s == "prepare" or s.startswith("pretrain")}, changed
    assert {s for s in changed if s.startswith("finetune")} and "report" in changed, changed

    # A params edit reruns exactly the jobs whose section it changes (Snakemake's params trigger on the hash of
    # each job's resolved section): the zero_out ablation's mask ratio, its pretraining only; a fine-tuning key,
    # no pretraining.
    def planned(edit: dict) -> list[str]:
        (root / "params.yaml").write_text(yaml.safe_dump({**params, **edit}, sort_keys=False))
        return re.findall(r"^\s+output: ([^,\s]+)", run([*command, "-n"], root), re.M)  # each job's first

    zero_out = {**params["ablations"]["zero_out"], "mask_ratio": 0.5}
    assert planned({"ablations": {**params["ablations"], "zero_out": zero_out}}) == [
        "runs/smoke/pretrain/resnet18/zero_out/seed0/encoder.pth"]
    assert {s for s in dvc_changed() if s == "prepare" or s.startswith("pretrain")} == {
        "pretrain_ablation@resnet18-zero_out"}  # the same one under DVC, from the adopted lock
    assert planned({"finetune": {**params["finetune"], "base_lr": 0.05}}) == []


@pytest.mark.slow
@pytest.mark.detectron2
def test_smoke_dag_is_one_state_for_both_engines_and_shared_through_a_remote(tmp_path):
    """Snakemake runs the smoke DAG and DVC adopts it; a params edit reruns under `dvc repro` exactly the stages it
    touches, after which Snakemake has nothing to do; a code edit names the same stages in both engines. Pushed to
    a directory remote and pulled into a fresh clone, the reproduction is up to date there and regenerates the same
    tables; experiments (`dvc exp run -S`) keep their metrics for `dvc exp show`."""
    root = checkout(tmp_path, "smoke", one_ablation)
    dvc, snakemake = str(BIN / "dvc"), str(BIN / "snakemake")
    stages = [s["name"] for s in dvc_stages(root)]
    assert f"dvc: adopted {len(stages)} stage(s) into dvc.lock" in run([snakemake, "--cores", "2"], root)
    params = load_params(root / "params.yaml")
    check_tables(root, params)
    assert "up to date" in run([dvc, "status"], root)
    check_looking_at_results(root, params)

    params["ablations"]["zero_out"]["mask_ratio"] = 0.25  # 3 of the 4 cells visible, not 2: another encoder
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = re.findall(r"^(\S+):$", run([dvc, "status"], root), re.M)
    assert changed == ["pretrain_ablation@resnet18-zero_out", "report"]
    ran = re.findall(r"Running stage '([^']+)'", run([dvc, "repro"], root))
    assert ran == ["pretrain_ablation@resnet18-zero_out", "finetune_ablation@low-resnet18-zero_out-0", "report"]
    assert "Nothing to be done" in run([snakemake, "-n", "--cores", "1"], root)  # DVC's runs recorded for it

    loss = root / "eval/finetune/loss.py"  # fine-tuning code: every fine-tuning and the report, nothing else
    original = loss.read_text()
    loss.write_text(original + "# an edit\n")
    changed = set(re.findall(r"^(\S+):$", run([dvc, "status"], root), re.M))
    finetunes = {name for name in stages if name.startswith("finetune")}
    assert changed == finetunes | {"report"}
    jobs = Counter(re.findall(r"^(?:local)?rule (\w+):", run([snakemake, "-n", "--cores", "1"], root), re.M))
    # downstream, the supervised detection arm too: its classifier is the from-scratch fine-tuning with all labels
    supervised = [b for b in STAGES["detection"].branches(params) if b.init == "supervised"]
    assert jobs == {"finetune": len(finetunes), "detection": len(supervised), "report": 1, "all": 1}, jobs
    loss.write_text(original)  # DVC compares content (Snakemake would still see a newer file)
    assert "up to date" in run([dvc, "status"], root)

    run([dvc, "remote", "add", "-d", "shared", str(tmp_path / "remote")], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "smoke run"], root)
    run([dvc, "push"], root)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    run([dvc, "pull"], clone)
    assert "up to date" in run([dvc, "status"], clone)
    run([sys.executable, "-m", "eval.cli", "report", "--params", "params.yaml", "--out", "results/again"], clone)
    tables = sorted(p.name for p in (clone / "results/smoke").glob("*.csv") if p.name != "runs.csv")
    assert tables and all((clone / "results/again" / t).read_text() == (clone / "results/smoke" / t).read_text()
                          for t in tables)
    runs = pd.read_csv(clone / "results/again/runs.csv")
    assert set(runs["pulled"]) == {"yes"} and set(runs["engine"]) == {"snakemake", "dvc"}
    run([sys.executable, "-m", "eval.cli", "prepare", "--params", "params.yaml"], clone)  # the data, for reruns
    assert "up to date" in run([dvc, "status"], clone)  # rebuilt byte for byte: nothing to rerun

    stage = "finetune_scratch@all-resnet18-0"
    run([dvc, "exp", "run", "-S", "finetune.base_lr=0.05", stage], root)
    shown = json.loads(run([dvc, "exp", "show", "--json"], root, stdout_only=True))
    revs = [rev for rev in shown if rev["rev"] != "workspace"]  # the commit, then its experiment
    revs += [e for rev in revs for exp in rev.get("experiments") or [] for e in exp["revs"]]
    metrics = "runs/smoke/finetune/all/resnet18/scratch/seed0/metrics.json"
    lrs = {e["data"]["params"]["params.yaml"]["data"]["finetune"]["base_lr"]: e["data"]["metrics"][metrics]["data"]
           for e in revs}
    assert set(lrs) == {params["finetune"]["base_lr"], 0.05}  # each run's metrics kept beside its parameters
    assert all(math.isfinite(m["top1"]) and 0 <= m["top1"] <= 100 for m in lrs.values())


TOY_STAGE = """

def _count(job: Job) -> None:
    from eval.data.config import DataConfig
    from eval.data.paths import prepared_data
    from spark.io import write_json

    train = prepared_data(DataConfig.parse(job.config)).classification.train
    write_json(job.args.out / "metrics.json", {"images": sum(1 for _ in train.rglob("*.png")), "model": job.args.model})


STAGES["count"] = Stage("count", "count the labelled training images", _count,
                        families=(Family("models", (SCRATCH,)),), data="classification")
"""


@pytest.mark.slow
def test_a_stage_added_to_the_registry_runs_under_both_engines(tmp_path):
    """A new stage is an entry in eval/pipeline/stages.py and its handler, nothing else: its subcommand, its
    resources, its Snakemake rule and its dvc.yaml stage follow, and both engines run it (Snakemake after prepare;
    DVC after adopting Snakemake's prepare)."""
    def with_resources(params: dict) -> None:
        params["resources"]["count"] = {"threads": 1, "mem_mb": 1000, "runtime": 5}

    root = checkout(tmp_path, "smoke", with_resources)
    with (root / "eval/pipeline/stages.py").open("a") as registry:
        registry.write(TOY_STAGE)
    run([sys.executable, "-m", "eval.pipeline.dvc_yaml"], root)
    assert "count" in yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    metrics = root / "runs/smoke/count/resnet18/scratch/seed0/metrics.json"
    expected = {"images": 10 * 20, "model": "resnet18"}  # mini-in's classes x train_per_class in the smoke preset

    run([str(BIN / "snakemake"), "--cores", "2", str(metrics.relative_to(root))], root)
    assert json.loads(metrics.read_text()) == expected
    shutil.rmtree(root / "runs/smoke/count")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "a count stage"], root)
    assert "count@resnet18-0" in run([str(BIN / "dvc"), "status"], root)  # adopted, and now its run is gone
    repro = run([str(BIN / "dvc"), "repro", "--force", "--single-item", "count"], root)  # run, not restored
    assert "Running stage 'count@resnet18-0'" in repro and "Running stage 'prepare'" not in repro
    assert json.loads(metrics.read_text()) == expected


def test_a_job_follows_its_stage_resources(monkeypatch):
    """``resources.<stage>``: torchrun with one process per GPU (Detectron2: its own workers), and
    threads / gpus torch threads per process, for the time of the job."""
    import types

    import torch

    import eval.cli
    import eval.finetune

    class Replaced(Exception):
        pass

    def execvpe(file, argv, env):
        raise Replaced(argv, env)

    monkeypatch.setattr(eval.cli.os, "execvpe", execvpe)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)  # the paper preset's node
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    job = ["--params", str(PRESETS["paper"]), "--out", "r", "--model", "resnet50"]
    with pytest.raises(Replaced) as replaced:
        eval.cli.main(["pretrain", *job, "--variant", "sparse"])
    argv, env = replaced.value.args
    assert argv[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "8", "-m", "eval.cli",
                        "pretrain", *job, "--variant", "sparse"]
    assert env["OMP_NUM_THREADS"] == "10"  # 80 threads over 8 processes

    launched = []
    detection = types.SimpleNamespace(run=lambda config, init, out, num_gpus, restart: launched.append(num_gpus))
    monkeypatch.setitem(sys.modules, "eval.detection.train", detection)
    assert eval.cli.main(["detection", *job, "--init", "scratch"]) == 0
    assert launched == [8]  # Detectron2 launches its workers

    threads, before = [], torch.get_num_threads()
    monkeypatch.setattr(eval.finetune, "finetune", lambda *args: threads.append(
        (torch.get_num_threads(), os.environ["OMP_NUM_THREADS"])))
    mini = ["--params", str(PRESETS["mini"]), "--out", "r", "--model", "resnet18", "--regime", "all"]
    assert eval.cli.main(["finetune", *mini, "--init", "scratch"]) == 0
    assert threads == [(1, "1")] and torch.get_num_threads() == before
