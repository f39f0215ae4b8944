"""Job time limits: where the limit comes from, and whether another epoch fits before it."""
import os
import stat
from datetime import datetime

from spark.engine.run import RESUBMIT, TimeLimit, TimeLimitReached, slurm_end_time
from spark.errors import run_command


def test_the_limit_comes_from_slurm(tmp_path, monkeypatch):
    assert slurm_end_time({}) is None  # not a SLURM job
    assert slurm_end_time({"SLURM_JOB_END_TIME": "1765000000"}) == 1765000000.0
    squeue = tmp_path / "squeue"  # what SLURM's squeue -h -j JOB -o %e prints: the job's end, local time
    squeue.write_text('#!/bin/sh\n[ "$*" = "-h -j 42 -o %e" ] && echo 2026-12-06T10:30:00\n')
    squeue.chmod(squeue.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert slurm_end_time({"SLURM_JOB_ID": "42"}) == datetime(2026, 12, 6, 10, 30).timestamp()
    squeue.write_text("#!/bin/sh\necho NONE\n")  # a job without a limit
    assert slurm_end_time({"SLURM_JOB_ID": "42"}) is None


def test_an_epoch_runs_only_if_it_ends_a_margin_before_the_limit():
    now = [0.0]
    limit = TimeLimit(end=1000.0, margin_s=100.0, clock=lambda: now[0])
    assert limit.allows_epoch() and limit.allows_epoch(recorded_seconds=900)  # 900 s left after the margin
    assert not limit.allows_epoch(recorded_seconds=901)
    for duration in (200.0, 300.0):  # this job's epochs: the slowest sets the pace
        limit.start_epoch()
        now[0] += duration
        limit.end_epoch()
    assert limit.left() == 400.0 and limit.allows_epoch(recorded_seconds=10_000)  # measured pace wins: 300
    now[0] += 101
    assert not limit.allows_epoch()
    assert TimeLimit(end=None, margin_s=0.0).allows_epoch(recorded_seconds=1e9)  # no limit


def test_stopping_for_the_limit_exits_with_the_resubmit_code(capsys):
    def stop():
        raise TimeLimitReached("stopped after epoch 3/4")

    assert run_command("spark pretrain", stop) == RESUBMIT == 75
    assert capsys.readouterr().err == "spark pretrain: error: stopped after epoch 3/4\n"
