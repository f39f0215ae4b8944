"""`make cluster-check`: the Snakemake SLURM profile (workflow/profiles/slurm) against a real SLURM.

Stands up the throwaway local cluster of local_cluster.sh (root; apt-get installs it once) and, in a scratch copy
of the workflow (the checkout stays clean):

  paper   every job of configs/paper.yaml passes `sbatch --test-only` on the paper-size node, with exactly the
          sbatch call the executor plugin builds: its own Executor.run_job runs for each job of the DAG, and only
          the final sbatch is replaced by the same call with --test-only (the data need not exist); then the
          pretraining jobs again with resources.pretrain.nodes: 4 (4 nodes, one task of 80 CPUs and 8 GPUs on
          each), on the cluster's four paper-size nodes;
  smoke   the smoke DAG (configs/smoke.yaml without its ablations and its second label regime, on fewer images:
          every stage and both kinds of branch, scratch and pretrained, in CI's time) runs through the profile,
          every job submitted with sbatch and COMPLETED in sacct, and a rerun of Snakemake finds nothing to do;
  limit   its pretraining is a 2-node job (one rank on each of the cluster's two nodes, started by srun inside
          the allocation) with a 1-minute time limit and more epochs than fit in one: the run stops itself at an
          epoch boundary before the limit (exit code 75; not TIMEOUT in sacct), Snakemake resubmits it (retries
          from the cost estimate that the check writes at runs/smoke/estimate.json), the next job resumes from
          its checkpoint ("resuming ... after epoch N" in train.log), and its encoder.pth is bitwise that of the
          same run uninterrupted on 2 ranks of one machine (torchrun --standalone, outside SLURM);
  resume  a fine-tuning job is cancelled with scancel once it has checkpointed; the profile's retry resubmits
          it and it resumes from its checkpoint.

The profile runs as committed except for what this machine lacks: no conda (`use-conda: false`, the .venv's
Python on PATH); for the smoke DAG, where its jobs run (`--nodelist` in their slurm_extra: one-node jobs on the
smoke node, the 2-node pretraining on it and `paper`) and how often Snakemake polls SLURM (every POLL_S seconds:
see poll_snakemake). Prints a PASS/FAIL line per check and exits non-zero on any failure; the cluster is stopped
at the end, whatever happens.

    .venv/bin/python workflow/scripts/slurm/cluster_check.py [--keep-scratch] [--keep-cluster]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CLUSTER = HERE / "local_cluster.sh"
BIN = Path(sys.executable).parent
PROFILE = "workflow/profiles/slurm"
SMOKE_PROFILE = "workflow/profiles/slurm-smoke"  # the profile, and where the smoke jobs run (scratch_copy)
COPIED = ("Snakefile", "workflow", "configs", "spark", "eval")  # what the workflow's jobs run (python -m eval.cli)
PAPER_NODE = "paper"  # local_cluster.sh's paper-size nodes: paper, paper1, paper2, paper3
PAPER_NODES = "paper,paper[1-3]"
MULTI_NODE = 4  # the paper pretraining's nodes in the multi-node --test-only pass
SMOKE_PARAMS = "cluster-smoke.yaml"
TIMEOUT = 600  # seconds, per Snakemake run
# The smoke pretraining: 2 nodes (this host's smoke node and `paper`, one rank each), a 1-minute time limit (SLURM's
# shortest), stopping STOP_MARGIN_S before it, and EPOCHS epochs: more than one job trains (see scratch_copy).
LIMITED = {"epochs": 16, "stop_margin_s": 15}
LIMITED_RESOURCES = {"nodes": 2, "threads": 1, "mem_mb": 2000, "runtime": 1}
# What the estimate says the run takes: 2 min with each job's start (imports, srun, rendezvous), so 3 jobs of 45 s
# (1 min less 15 s) and a spare: on a quiet machine it took 2 jobs, under CI's load 3 (fresh-clone run, 2026-12-06).
LIMITED_HOURS = 2.0 / 60
REFERENCE = "reference-pretrain"  # the same pretraining, uninterrupted, on 2 local ranks
POLL_S = 3  # the smoke run's Snakemake polls SLURM this often (the plugin backs off by 10 s a poll, up to 180 s)


class CheckFailed(Exception):
    pass


def log(message: str) -> None:
    print(f"cluster-check: {message}", flush=True)


def cluster_env() -> dict[str, str]:
    slurm_dir = os.environ.get("SPARK_SLURM_DIR", "/tmp/spark-repro-slurm")
    return {**os.environ, "SLURM_CONF": f"{slurm_dir}/etc/slurm.conf", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def sh(command: list[str] | str, cwd: Path | None = None, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=cluster_env(), capture_output=True, text=True,
                            shell=isinstance(command, str), **kwargs)
    if check and result.returncode != 0:
        raise CheckFailed(f"{command if isinstance(command, str) else shlex.join(command)} exited "
                          f"{result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else f"({path}: none)"


# --- the scratch copy ------------------------------------------------------------------------------------------

def scratch_copy(root: Path) -> dict:
    """The workflow and its code; the profile without conda; the smoke preset narrowed for CI, with its
    pretraining on 2 nodes under a 1-minute time limit, and a cost estimate for it. Returns the params."""
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    profile_file = root / PROFILE / "config.yaml"
    profile = yaml.safe_load(profile_file.read_text())
    if profile.get("executor") != "slurm":
        raise CheckFailed(f"{PROFILE}/config.yaml: executor is {profile.get('executor')!r}, not slurm")
    profile["use-conda"] = False  # no conda here: the jobs run the .venv's Python (PATH)
    profile_file.write_text(yaml.safe_dump(profile, sort_keys=False))
    # The smoke DAG's copy of it, with where each job runs: one-node jobs on the smoke node (this host's cores),
    # the 2-node pretraining on the smoke node and `paper` (the same host: SLURM starts one rank on each through
    # their slurmds).
    host = sh(["hostname", "-s"]).stdout.strip()
    placed = profile.setdefault("set-resources", {})
    for rule in ("prepare", "pretrain", "finetune", "detection", "report"):
        nodes = f"{host},{PAPER_NODE}" if rule == "pretrain" else host
        placed.setdefault(rule, {})["slurm_extra"] = f"'--nodelist={nodes}'"
    (root / SMOKE_PROFILE).mkdir(parents=True)
    (root / SMOKE_PROFILE / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    params = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    # Every stage, once per branch kind (scratch and pretrained), in CI's time: no ablation, one label regime.
    params.update(ablations={}, label_regimes={"all": {}}, ablation_regimes=["all"])
    params["pretrain"].update(LIMITED, save_every=1)  # more epochs than fit in one job: stop, resubmit, resume
    params["resources"]["pretrain"] = LIMITED_RESOURCES
    params["finetune"]["epochs"] = 2  # a checkpoint after epoch 1, to cancel a job at and resume it from
    # Fewer images: a few iterations per epoch (the jobs' Python and Snakemake start-ups stay what they are).
    params["data"]["mini_in"].update(train_per_class=8, val_per_class=4, unlabeled_per_class=5)
    params["data"]["mini_coco"].update(val_images=4)
    (root / SMOKE_PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    # The cost estimate `spark estimate` would write (its format; the hours of a run here, 2 jobs): the workflow
    # sizes the pretraining's retries by it.
    from eval.pipeline.dag import layout
    from eval.pipeline.stages import STAGES

    lay = layout(params)
    runs = [lay.run("pretrain", b) for b in STAGES["pretrain"].branches(params)]
    estimate = {"preset": params["preset"], "source": "cluster_check.py", "jobs": [
        {"stage": "pretrain", "run": run, "hours": LIMITED_HOURS, "device_hours": LIMITED_HOURS * 2} for run in runs]}
    (root / lay.estimate).parent.mkdir(parents=True, exist_ok=True)
    (root / lay.estimate).write_text(json.dumps(estimate, indent=1))
    return params


# --- paper: sbatch --test-only of every job, as the plugin builds it ------------------------------------------

def record_submissions(output: Path, snakemake_args: list[str]) -> None:
    """In a child process: Snakemake with the SLURM executor, whose first run_jobs() runs the plugin's own
    run_job() for every job of the DAG with sbatch intercepted: each call is written to OUTPUT, none submitted."""
    import snakemake_executor_plugin_slurm as plugin
    from snakemake.cli import main

    real = subprocess
    records = []

    class Intercepted:
        """A finished `sbatch` that failed: run_job() reports the job as failed, having built its call."""

        def __init__(self, call: str):
            self.call, self.returncode = call, 1

        def communicate(self, input=None):
            records[-1]["stdin"] = input
            return "", "intercepted by cluster_check.py"

    class Subprocess:
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def Popen(call, *args, **kwargs):
            if isinstance(call, str) and call.startswith("sbatch "):
                records[-1]["call"] = call
                return Intercepted(call)
            return real.Popen(call, *args, **kwargs)

    def run_jobs(self, jobs):
        plugin.subprocess = Subprocess()
        for job in self.workflow.dag.needrun_jobs():
            if job.is_norun:
                continue
            records.append({"rule": job.rule.name, "wildcards": dict(job.wildcards_dict), "threads": job.threads})
            # run_job() reports what stops it before sbatch (an invalid account, say) as the job's error
            self._report_job_error_threadsafe = lambda info, msg: records[-1].setdefault("error", msg)
            self.run_job(job)
        output.write_text(json.dumps(records, indent=1))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # nothing was submitted: no job to wait for

    plugin.Executor.run_jobs = run_jobs
    main(snakemake_args)


def check_paper(root: Path, configfile: str = "configs/paper.yaml", nodes: str = PAPER_NODE,
                until: str | None = None) -> str:
    """Every job of CONFIGFILE's DAG (up to rule UNTIL) through the plugin, its sbatch call --test-only on NODES."""
    output = root / f"{Path(configfile).stem}-submissions.json"
    selection = ["--until", until] if until else []
    command = [sys.executable, str(Path(__file__).resolve()), "--record-submissions", str(output), "--",
               "--workflow-profile", PROFILE, "--configfile", configfile, "--nolock", *selection]
    run = sh(command, cwd=root, check=False, timeout=TIMEOUT)
    if not output.exists():
        raise CheckFailed(f"no sbatch call recorded (exit {run.returncode}):\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    records = json.loads(output.read_text())
    expected = dry_run_jobs(root, configfile, selection)
    got = Counter(r["rule"] for r in records)
    if got != expected:
        raise CheckFailed(f"the plugin built sbatch calls for {dict(got)}, the DAG has {dict(expected)}")
    refused, requests = [], {}
    for record in records:
        if until and record["rule"] != until:
            continue
        if "call" not in record:
            refused.append(f"{record['rule']} {record['wildcards']}: no sbatch call: {record.get('error')}")
            continue
        # The plugin's call, with --test-only and on the paper nodes (a small job would go to the smoke node)
        test = sh(record["call"].replace("sbatch ", f"sbatch --test-only --nodelist={nodes} ", 1), cwd=root,
                  check=False, input=record.get("stdin"))
        request = sbatch_request(record["call"])
        requests.setdefault(record["rule"], request)
        if test.returncode != 0 or f"on nodes {nodes} " not in test.stderr:
            refused.append(f"{record['rule']} {record['wildcards']}: {request}\n    {test.stderr.strip()}")
    tested = Counter(r["rule"] for r in records if not until or r["rule"] == until)
    for rule, request in requests.items():
        log(f"  {Path(configfile).stem} {rule}: sbatch {request}")
    if refused:
        raise CheckFailed(f"{len(refused)} of {sum(tested.values())} jobs of {configfile} not accepted by sbatch "
                          f"--test-only:\n" + "\n".join(refused))
    return f"{sum(tested.values())} {'' if not until else until + ' '}jobs of {configfile} accepted by sbatch " \
           f"--test-only on nodes {nodes}"


def check_multi_node_paper(root: Path) -> str:
    """The paper pretraining on MULTI_NODE nodes (resources.pretrain.nodes): N nodes, one task of 80 CPUs and
    8 GPUs per node, accepted by --test-only on the N paper-size nodes."""
    params = yaml.safe_load((root / "configs/paper.yaml").read_text())
    params["resources"]["pretrain"]["nodes"] = MULTI_NODE
    configfile = f"paper-{MULTI_NODE}-nodes.yaml"
    (root / configfile).write_text(yaml.safe_dump(params, sort_keys=False))
    return check_paper(root, configfile, PAPER_NODES, until="pretrain")


def sbatch_request(call: str) -> str:
    """The resource options of an sbatch call (without its name, log, comment, directory and command)."""
    words = shlex.split(call)[1:]
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("--job-name", "--output", "--comment", "-D"):
            skip = True
        elif not word.startswith(("--wrap", "--parsable", "--export")) and word != "/dev/stdin":
            kept.append(word)
    return " ".join(kept)


def dry_run_jobs(root: Path, configfile: str, selection: list[str] = ()) -> Counter:
    """The jobs Snakemake would submit (the job stats of a dry run, without the target rule `all`)."""
    text = sh([str(BIN / "snakemake"), "-n", "--configfile", configfile, "--cores", "1", "--forceall", *selection],
              cwd=root).stdout
    stats = text.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = Counter({rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M)})
    jobs.pop("all", None)
    return jobs


# --- smoke + limit + resume: the smoke DAG through sbatch, its 2-node pretraining stopped by its time limit and
# resumed, a fine-tuning cancelled and resumed --------------------------------------------------------------------

def smoke_command() -> list[str]:
    """Snakemake on the smoke DAG with the profile, in a process whose SLURM plugin polls every POLL_S seconds."""
    return [sys.executable, str(Path(__file__).resolve()), "--poll-snakemake", "--",
            "--workflow-profile", SMOKE_PROFILE, "--configfile", SMOKE_PARAMS,
            f"--slurm-init-seconds-before-status-checks={POLL_S}",  # the default 40 s would dominate the check
            "--slurm-keep-successful-logs"]


def poll_snakemake(snakemake_args: list[str]) -> None:
    """In a child process: Snakemake whose SLURM executor polls every POLL_S seconds at most. The plugin adds 10 s
    to its interval after every poll that finds no job finished (up to 180 s, not a setting): on this DAG of
    short jobs that cost the check some 100 s of waiting for jobs that had ended. Nothing else changes."""
    import snakemake_executor_plugin_slurm as plugin
    from snakemake.cli import main

    def capped(self, value):
        self._next_seconds_between_status_checks = None if value is None else min(value, POLL_S)

    base = plugin.Executor.next_seconds_between_status_checks
    plugin.Executor.next_seconds_between_status_checks = property(base.fget, capped)
    main(snakemake_args)


def interrupted_run(root: Path, stage: str) -> Path | None:
    """A run dir of ``stage`` with a checkpoint and no result yet."""
    for checkpoint in sorted(root.glob(f"runs/smoke/{stage}/**/checkpoint.pth")):
        if not (checkpoint.parent / "metrics.json").exists():
            return checkpoint.parent
    return None


def job_of(root: Path, run_dir: Path, rule: str) -> str | None:
    """The running SLURM job of a run dir (the plugin's comment: rule and wildcards, all in the run dir's path)."""
    parts = set(run_dir.relative_to(root).parts) | {run_dir.name.removeprefix("seed")}
    for line in sh(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"]).stdout.splitlines():
        job, _, comment = line.partition("|")
        prefix = f"rule_{rule}_wildcards_"
        if comment.startswith(prefix) and set(comment.strip().removeprefix(prefix).split("_")) <= parts:
            return job.strip()
    return None


def start_reference(root: Path, params: dict) -> subprocess.Popen:
    """The smoke pretraining on 2 ranks of this machine, uninterrupted (no SLURM job: no time limit)."""
    from eval.pipeline.stages import STAGES

    branch = STAGES["pretrain"].branches(params)[0]
    env = {k: v for k, v in cluster_env().items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    out = root / REFERENCE
    with (root / f"{REFERENCE}.log").open("w") as sink:
        return subprocess.Popen(
            ["nice", "-n", "10", str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "eval.cli",
             "pretrain", "--params", SMOKE_PARAMS, "--out", str(out), "--model", branch.model, "--variant",
             branch.init, f"pretrain.seed={branch.seed}"],
            cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


def same_weights(one: Path, other: Path) -> str | None:
    """None if both files hold bitwise the same tensors, else what differs."""
    import torch

    a, b = (torch.load(path, map_location="cpu", weights_only=True) for path in (one, other))
    a, b = (x.get("model", x) if isinstance(x, dict) and "model" in x else x for x in (a, b))
    if a.keys() != b.keys():
        return f"different keys: {sorted(set(a) ^ set(b))[:5]}"
    differ = [k for k in a if not (torch.is_tensor(a[k]) and torch.equal(a[k], b[k]))]
    return f"{len(differ)} of {len(a)} tensors differ: {differ[:5]}" if differ else None


def check_smoke(root: Path, started: str, params: dict) -> list[str]:
    """Run the smoke DAG: its pretraining stops at its time limit and resumes, a fine-tuning job is cancelled and
    resumes; then check what the run, sacct and the weights show."""
    first_log = root / "snakemake-1.log"
    lay_runs = root / "runs/smoke"
    with first_log.open("w") as sink:
        process = subprocess.Popen(smoke_command(), cwd=root, env=cluster_env(), stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    reference = cancelled = cancelled_dir = None
    stopped_logs: list[str] = []  # the pretraining job's log each time it stopped itself (the next one rewrites it)
    deadline = time.monotonic() + TIMEOUT
    try:
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise CheckFailed(f"the smoke DAG did not finish within {TIMEOUT} s:\n{tail(first_log)}")
            for job_log in lay_runs.glob("logs/pretrain/**/*.log"):
                text = job_log.read_text(errors="replace")
                if "stopped after epoch" in text and text not in stopped_logs:
                    stopped_logs.append(text)
                    (root / f"pretrain-stopped-{len(stopped_logs)}.log").write_text(text)
            if reference is None and list(lay_runs.glob("pretrain/*/*/seed*/train.log")):
                reference = start_reference(root, params)  # the data is there: the pretraining has started
            if cancelled is None:  # cancel a fine-tuning job once it has checkpointed, while it still runs
                cancelled_dir = interrupted_run(root, "finetune")
                cancelled = job_of(root, cancelled_dir, "finetune") if cancelled_dir else None
                if cancelled:
                    sh(["scancel", cancelled])
                    log(f"  resume: scancel {cancelled} ({cancelled_dir.relative_to(root)}, checkpointed)")
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # Snakemake cancels its SLURM jobs
            process.wait(timeout=60)
    if process.returncode != 0:
        raise CheckFailed(f"snakemake exited {process.returncode}:\n{tail(first_log)}")
    rerun = sh(smoke_command(), cwd=root, timeout=TIMEOUT)
    (root / "snakemake-2.log").write_text(rerun.stdout + rerun.stderr)
    if "Nothing to be done" not in rerun.stdout + rerun.stderr:
        raise CheckFailed(f"the rerun found jobs left to do:\n{(rerun.stdout + rerun.stderr)[-3000:]}")

    results = []
    # Every job went through sbatch and completed; besides, only the cancelled fine-tuning and the pretraining
    # jobs that stopped themselves before their time limit (FAILED: exit code 75 under torchrun's launcher).
    uuids = set(re.findall(r"SLURM run ID: (\S+)", first_log.read_text()))
    accounted = sh(["sacct", "-X", "-n", "-P", "-S", started, "--name", ",".join(uuids),
                    "--format=JobIDRaw,State,ExitCode,ElapsedRaw,TimelimitRaw,NodeList,Comment%400"]).stdout
    jobs: dict[str, list[dict]] = {}
    for line in accounted.splitlines():
        job, state, code, elapsed, limit, nodes, comment = line.split("|", 6)
        jobs.setdefault(comment, []).append({"job": job, "state": state.split()[0], "code": code,
                                             "elapsed": elapsed, "limit": limit, "nodes": nodes})
    rule_of = {c: re.match(r"rule_(\w+?)(?:_wildcards_|$)", c).group(1) for c in jobs}
    completed = Counter(rule_of[c] for c, js in jobs.items() if js[-1]["state"] == "COMPLETED")
    expected = dry_run_jobs(root, SMOKE_PARAMS)
    timeouts = [j for js in jobs.values() for j in js if j["state"] == "TIMEOUT"]
    if timeouts:
        raise CheckFailed(f"SLURM killed {len(timeouts)} job(s) at their time limit (TIMEOUT): the run did not stop "
                          f"itself early enough (pretrain.stop_margin_s {LIMITED['stop_margin_s']} s, an epoch's "
                          f"pace):\n{accounted}\n{stopped_logs[-1][-2000:] if stopped_logs else ''}")
    bad = {c: js for c, js in jobs.items()
           if any(j["state"] != "COMPLETED" and not (j["job"] == cancelled and j["state"] == "CANCELLED")
                  and not (rule_of[c] == "pretrain" and j["state"] == "FAILED") for j in js)}
    if completed != expected or bad:
        raise CheckFailed(f"sacct: completed {dict(completed)}, expected {dict(expected)}; other states: {bad}\n"
                          f"{accounted}")
    results.append(f"{sum(expected.values())} smoke jobs submitted with sbatch, each COMPLETED in sacct "
                   f"({sum(map(len, jobs.values()))} submissions)")

    # The time-limited 2-node pretraining: stopped itself (exit 75), resubmitted, resumed, bitwise as uninterrupted.
    [(comment, pretrain_jobs)] = [(c, js) for c, js in jobs.items() if rule_of[c] == "pretrain"]
    run_dir = next(root.glob("runs/smoke/pretrain/*/*/seed*/encoder.pth")).parent
    train_log = (run_dir / "train.log").read_text()
    resumed = re.findall(r"resuming \S+ after epoch (\d+)/(\d+)", train_log)
    summary = ", ".join(f"{j['job']} {j['state']} {j['code']} after {j['elapsed']} s of {int(j['limit']) * 60} s "
                        f"on {j['nodes']}" for j in pretrain_jobs)
    log(f"  limit: pretraining jobs: {summary}")
    if len(pretrain_jobs) < 2 or not resumed or not stopped_logs:
        raise CheckFailed(f"the pretraining did not stop before its time limit and resume in a resubmitted job: "
                          f"{summary}; resumed {resumed}\n{train_log[-2000:]}")
    # Rank 0's "spark pretrain: error: stopped after epoch N/E" is what run_command prints as it exits 75
    # (spark/errors.py); torchrun's summary ("exitcode : 75") may be cut short by srun's --kill-on-bad-exit.
    stops = sorted({m for text in stopped_logs for m in re.findall(r"spark pretrain: error: (stopped after epoch "
                                                                   r"\d+/\d+)", text)})
    if not stops:
        raise CheckFailed(f"no stopped pretraining job's log shows its stop (exit 75):\n{stopped_logs[-1][-3000:]}")
    exit_75 = any(re.search(r"exitcode\s*:\s*75\b", text) for text in stopped_logs)
    if any(j["nodes"].count(",") + 1 != LIMITED_RESOURCES["nodes"] for j in pretrain_jobs):
        raise CheckFailed(f"the pretraining jobs did not run on {LIMITED_RESOURCES['nodes']} nodes: {summary}")
    from eval.pipeline.resubmissions import resubmissions

    retries = resubmissions(params, "pretrain", json.loads((root / "runs/smoke/estimate.json").read_text()))
    if "No cost estimate" in first_log.read_text() or len(pretrain_jobs) > retries + 1:
        raise CheckFailed(f"the workflow did not read runs/smoke/estimate.json (retries {retries}), or the run took "
                          f"more jobs ({len(pretrain_jobs)}) than it allows")
    results.append(f"2-node pretraining, 1-min time limit: {'; '.join(stops)} before the limit (exit 75"
                   f"{', in torchrun' if exit_75 else ''}), "
                   f"resubmitted (retries {retries} from the estimate), resumed after epoch(s) "
                   f"{', '.join(f'{a}/{b}' for a, b in resumed)}; jobs {summary}")
    if reference is None:
        raise CheckFailed("the reference pretraining never started")
    if reference.wait(timeout=max(deadline - time.monotonic(), 1)) != 0:
        raise CheckFailed(f"the reference pretraining exited {reference.returncode}:\n"
                          f"{tail(root / f'{REFERENCE}.log')}")
    differ = same_weights(run_dir / "encoder.pth", root / REFERENCE / "encoder.pth")
    if differ:
        raise CheckFailed(f"the resumed 2-node encoder.pth is not the uninterrupted one's: {differ}")
    results.append("its encoder.pth is bitwise that of the same pretraining uninterrupted on 2 local ranks")

    # The cancelled fine-tuning: CANCELLED in sacct, then resumed from its checkpoint by its retry.
    if cancelled is None:
        raise CheckFailed("no fine-tuning job was cancelled (none checkpointed while running)")
    cancelled_state = next((j["state"] for js in jobs.values() for j in js if j["job"] == cancelled), None)
    if cancelled_state != "CANCELLED":
        raise CheckFailed(f"job {cancelled} is {cancelled_state} in sacct, not CANCELLED (it finished first?)")
    finetune_log = (cancelled_dir / "train.log").read_text()
    resumed = re.search(r"resuming \S+ after epoch (\d+)/2\b", finetune_log)
    if not resumed or not (cancelled_dir / "metrics.json").exists():
        raise CheckFailed(f"{cancelled_dir.relative_to(root)}: not resumed from its checkpoint:\n"
                          f"{finetune_log[-2000:]}")
    results.append(f"scancel'd fine-tuning job {cancelled} resumed after epoch {resumed.group(1)}/2; "
                   "the DAG completed and a rerun had nothing to do")
    return results


# --- main ----------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-scratch", action="store_true", help="keep the scratch copy (its path is printed)")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the local cluster running")
    parser.add_argument("--record-submissions", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--poll-snakemake", action="store_true", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.record_submissions:
        record_submissions(args.record_submissions, [a for a in rest if a != "--"])
        return 1  # main() returned without reaching run_jobs: Snakemake failed before scheduling
    if args.poll_snakemake:
        poll_snakemake([a for a in rest if a != "--"])
        return 0  # main() exits with Snakemake's status

    begin = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="spark-cluster-check-"))
    summary: list[tuple[str, str]] = []

    def stop_on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop_on_signal)
    try:
        log("starting the local SLURM cluster")
        start = subprocess.run(["bash", str(CLUSTER), "start"], env=cluster_env())
        if start.returncode != 0:
            raise CheckFailed("the local cluster did not start")
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        summary.append(("PASS", f"local cluster up ({time.monotonic() - begin:.0f} s)"))
        params = scratch_copy(root)
        for name, check in (("paper", lambda: [check_paper(root), check_multi_node_paper(root)]),
                            ("smoke", lambda: check_smoke(root, started, params))):
            t0 = time.monotonic()
            log(f"{name} ...")
            try:
                for line in check():
                    summary.append(("PASS", f"{name}: {line} ({time.monotonic() - t0:.0f} s)"))
            except (CheckFailed, subprocess.TimeoutExpired) as err:
                summary.append(("FAIL", f"{name}: {err}"))
    except Exception as err:  # noqa: BLE001 - reported, and the cluster still stopped
        summary.append(("FAIL", f"{type(err).__name__}: {err}"))
    finally:
        if not args.keep_cluster:
            stop = subprocess.run(["bash", str(CLUSTER), "stop"], env=cluster_env())
            if stop.returncode != 0:
                summary.append(("FAIL", "local cluster: did not stop cleanly"))
        if args.keep_scratch:
            log(f"scratch copy kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        print("\n".join(f"{status}  {line}" for status, line in summary))
        ok = bool(summary) and all(status == "PASS" for status, _ in summary)
        print(f"cluster-check: {'PASS' if ok else 'FAIL'} ({time.monotonic() - begin:.0f} s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
