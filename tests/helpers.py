"""Helpers shared by the training-run tests."""
import subprocess
import sys
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
