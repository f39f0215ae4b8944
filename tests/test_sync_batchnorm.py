"""Masked BN with synchronised moments on 2 gloo ranks equals one process on the whole batch."""
from queue import Empty

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from spark.masking import upsample_visible
from spark.sparse import VisibleMask, convert_sync_batchnorm, sparsify


def _inputs():
    g = torch.Generator().manual_seed(0)
    visible = torch.rand(4, 1, 2, 2, generator=g) > 0.4
    visible[:, 0, 0, 0] = True
    x = torch.randn(4, 5, 8, 8, generator=g) * upsample_visible(visible, (8, 8))
    return x, visible


def _rank(rank: int, store: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    x, visible = _inputs()
    bn = convert_sync_batchnorm(sparsify(nn.BatchNorm2d(5), mask := VisibleMask()))
    part = slice(2 * rank, 2 * rank + 2)
    xr = x[part].clone().requires_grad_(True)
    with mask.use(visible[part]):
        out = bn(xr)
    out.square().sum().backward()
    # as numpy arrays, sent by value: torch would send tensors as shared memory that the parent fetches from this
    # process, which may have exited by then
    queue.put((rank, *(t.detach().numpy() for t in (out, xr.grad, bn.running_mean, bn.running_var))))
    dist.destroy_process_group()


def test_synchronised_masked_batchnorm_matches_full_batch(tmp_path):
    x, visible = _inputs()
    bn = sparsify(nn.BatchNorm2d(5), mask := VisibleMask())
    xs = x.clone().requires_grad_(True)
    with mask.use(visible):
        out = bn(xs)
    # Each rank's loss is the sum over its half; the all-reduced moments make the gradients add up.
    out.square().sum().backward()

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    store = tmp_path / "store"  # a file rendezvous: no port to pick (gloo's own sockets get theirs from the OS)
    procs = [ctx.Process(target=_rank, args=(r, store, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:  # deadlines: a rank stuck in a collective fails the test instead of hanging it (and pytest's exit)
        results = {}
        for _ in procs:
            try:
                rank, *rest = queue.get(timeout=120)
            except Empty:
                pytest.fail(f"no result from both ranks within 120 s (exit codes {[p.exitcode for p in procs]}; "
                            "their stderr is in the captured output)", pytrace=False)
            results[rank] = [torch.from_numpy(a) for a in rest]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0, f"rank exit codes {[p.exitcode for p in procs]} (None: still running after 60 s)"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    got_out = torch.cat([results[0][0], results[1][0]])
    got_grad = torch.cat([results[0][1], results[1][1]])
    torch.testing.assert_close(got_out, out.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grad, xs.grad, atol=1e-5, rtol=1e-4)
    for r in (0, 1):
        torch.testing.assert_close(results[r][2], bn.running_mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(results[r][3], bn.running_var, atol=1e-6, rtol=1e-5)
