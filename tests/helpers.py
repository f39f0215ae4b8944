"""Helpers shared by the training-run tests."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def run_two_gloo_ranks(script: str, params: Path, run_dir: Path) -> list[dict[str, torch.Tensor]]:
    """Run ``script PARAMS RUN_DIR`` under ``torchrun --nproc_per_node 2`` (gloo on CPU); each rank saves its
    weights to ``RUN_DIR/rank<R>.pt``, returned in rank order."""
    path = run_dir.parent / "rank.py"
    path.write_text(script)
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(path), str(params),
                             str(run_dir)], cwd=run_dir.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(run_dir / f"rank{r}.pt") for r in (0, 1)]


def kill_after_first_checkpoint(command: list[str], run_dir: Path) -> tuple[int, subprocess.CompletedProcess]:
    """Start ``command`` (a training CLI writing ``run_dir``), SIGKILL it once ``checkpoint.pth`` exists, then run
    the same command again to completion. Returns the epoch the killed run had checkpointed and the rerun."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    checkpoint = run_dir / "checkpoint.pth"
    process = subprocess.Popen(command, cwd=run_dir.parent, env=env, stderr=subprocess.PIPE, text=True)
    while not checkpoint.exists() and process.poll() is None:  # written atomically after each epoch
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, process.stderr.read()
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    left = {p.name for p in run_dir.iterdir()}
    assert not {"encoder.pth", "metrics.json", "reconstruction.png"} & left  # results appear only on completion
    resumed = subprocess.run(command, cwd=run_dir.parent, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    return killed_at, resumed
