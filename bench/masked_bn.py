"""Cost of the masked BatchNorm's shifted moments: a SparK pretraining step with them and with plain moments.

The plain variant is the former one-pass sum / sum of squares (E[x^2] - mean^2), defined here only as the
baseline. Both run on one model and optimizer in one process, the masked BNs switching class between steps in
ABBA order so that drift (clock, other load) falls on both alike. Reported: each variant's median step time with
its interquartile range, and the median and interquartile range of the per-round time ratio shifted / plain.
The masked BNs alone (forward and backward on the step's own inputs) are timed the same way: their difference is
the cost resolved far below the noise of a whole step.

    python bench/masked_bn.py                 # resnet18, 128 px, batch 32, decoder width 128, fp32, 2 threads
    python bench/masked_bn.py --rounds 40
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from timm.optim import Lamb

from spark import build_spark
from spark.engine.precision import cpu_flags
from spark.sparse import MaskedBatchNorm


class PlainMoments:
    """Mixin restoring the one-pass sum / sum-of-squares moments of :meth:`MaskedBatchNorm._visible_moments`."""

    def _visible_moments(self, x, mask):
        dtype = torch.promote_types(x.dtype, torch.float32)
        visible = x.to(dtype) * mask.to(dtype)
        count = mask.sum(dtype=dtype)
        mean = visible.sum((0, 2, 3)) / count
        var = (visible.square().sum((0, 2, 3)) / count - mean.square()).clamp_min(0)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var * count / (count - 1).clamp_min(1))
        return mean, var


@functools.cache
def plain(cls: type) -> type:
    return type(f"Plain{cls.__name__}", (PlainMoments, cls), {})


def quartiles(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return f"{median:.4f} [{q1:.4f}, {q3:.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--decoder-width", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20, help="ABBA rounds, 4 steps each (at least 2)")
    parser.add_argument("--norm-rounds", type=int, default=100, help="ABBA rounds of the masked BNs alone")
    parser.add_argument("--warmup", type=int, default=2, help="steps of each variant before timing")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if min(args.rounds, args.norm_rounds) < 2:
        parser.error("--rounds and --norm-rounds must be at least 2")
    torch.set_num_threads(args.threads)
    print(f"# CPU capability {torch.backends.cpu.get_cpu_capability()}; avx512_bf16 in /proc/cpuinfo: "
          f"{'avx512_bf16' in cpu_flags()}; {args.threads} threads")
    print(f"# {args.arch} {args.input_size}px batch {args.batch} decoder {args.decoder_width}, fp32, "
          f"{args.rounds} ABBA rounds")

    torch.manual_seed(0)
    model = build_spark(args.arch, args.input_size, decoder_width=args.decoder_width).train()
    optimizer = Lamb(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    images = torch.randn(args.batch, 3, args.input_size, args.input_size)
    active = model.mask(args.batch, generator=torch.Generator().manual_seed(0))
    norms = [m for m in model.modules() if isinstance(m, MaskedBatchNorm)]
    shifted_classes = [type(m) for m in norms]

    def use(variant: str) -> None:
        for m, cls in zip(norms, shifted_classes):
            m.__class__ = cls if variant == "shifted" else plain(cls)

    def step(variant: str) -> float:
        use(variant)
        start = time.perf_counter()
        loss = model(images, active)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        return time.perf_counter() - start

    inputs = []
    hooks = [m.register_forward_pre_hook(lambda m, args: inputs.append((m, args[0].detach()))) for m in norms]
    for _ in range(args.warmup):
        step("plain")
        step("shifted")
    for hook in hooks:
        hook.remove()
    inputs = [(m, x.requires_grad_(), torch.randn_like(x)) for m, x in inputs[-len(norms):]]

    def norms_only(variant: str) -> float:
        """Forward and backward (input, weight and bias) of every masked BN of one step, on that step's inputs."""
        use(variant)
        start = time.perf_counter()
        with model.active_mask.use(active):
            for m, x, upstream in inputs:
                torch.autograd.grad(m(x), (x, *m.parameters()), upstream)
        return time.perf_counter() - start

    steps = abba(step, args.rounds)
    report("step", steps)
    norm_times = abba(norms_only, args.norm_rounds)
    report("masked BNs", norm_times)
    extra = statistics.median(norm_times["shifted"]) - statistics.median(norm_times["plain"])
    print(f"shifted - plain masked BNs: {extra * 1000:.1f} ms = {extra / statistics.median(steps['plain']):.2%} of a step")


def abba(run, rounds: int) -> dict[str, list[float]]:
    """Times of ``run(variant)`` over ``rounds`` rounds, plain and shifted in ABBA order, and per-round ratios."""
    times = {"plain": [], "shifted": [], "ratio": []}
    for i in range(rounds):
        order = ("plain", "shifted", "shifted", "plain") if i % 2 == 0 else ("shifted", "plain", "plain", "shifted")
        total = {"plain": 0.0, "shifted": 0.0}
        for variant in order:
            t = run(variant)
            times[variant].append(t)
            total[variant] += t
        times["ratio"].append(total["shifted"] / total["plain"])
    return times


def report(what: str, times: dict[str, list[float]]) -> None:
    for variant in ("plain", "shifted"):
        ts = times[variant]
        print(f"{what} {variant:<8} s, median [IQR] {quartiles(ts)}  (n={len(ts)}, min {min(ts):.4f})")
    print(f"{what} shifted / plain per round, median [IQR] {quartiles(times['ratio'])}")


if __name__ == "__main__":
    main()
