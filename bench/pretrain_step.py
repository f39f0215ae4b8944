"""Throughput and peak memory of one pretraining step (forward + backward + LAMB step).

Compares the dense encoder alone, SparK sparse and SparK zero_out, in fp32 and (where the device has it natively,
or when asked with --precisions) bf16 autocast, with and without channels_last. Each configuration runs in its own
process so its peak memory is its own. The first lines name the CPU capability and whether bf16 is native.

    python bench/pretrain_step.py                       # resnet18, 128 px, batch 32, decoder width 256
    python bench/pretrain_step.py --arch resnet50 --input-size 224 --batch 16 --decoder-width 768
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from timm.optim import Lamb

from spark import build_spark
from spark.encoder import create_encoder
from spark.engine.precision import native_bf16

VARIANTS = ("dense", "sparse", "zero_out")


def build_step(args: argparse.Namespace, variant: str, device: torch.device):
    """A closure running one training step of ``variant`` on a fixed synthetic batch."""
    images = torch.randn(args.batch, 3, args.input_size, args.input_size, device=device)
    if variant == "dense":
        model, scales = create_encoder(args.arch)

        def loss_fn(x):
            feats = model.forward_intermediates(x, indices=list(scales.indices), intermediates_only=True)
            return sum(f.float().square().mean() for f in feats)

    else:
        model = build_spark(args.arch, args.input_size, decoder_width=args.decoder_width, encoder_mode=variant)
        active = model.mask(args.batch, device, generator=torch.Generator().manual_seed(0))

        def loss_fn(x):
            return model(x, active)

    model.to(device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = Lamb(model.parameters(), lr=1e-4, betas=(0.9, 0.95))

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = loss_fn(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return step


def run_one(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    step = build_step(args, args.variant, device)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1000
    peak_mb = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {"ms_per_step": ms, "img_per_s": args.batch / ms * 1000, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--decoder-width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"],
                        help="default: fp32, plus bf16 where the device computes it natively")
    parser.add_argument("--layouts", nargs="+", default=["contiguous", "channels_last"], choices=["contiguous", "channels_last"])
    # One configuration, in this process (used by the driver below).
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.variant:
        print(json.dumps(run_one(args)))
        return

    native, evidence = native_bf16(torch.device(args.device))
    args.precisions = args.precisions or (["fp32", "bf16"] if native else ["fp32"])
    print(f"# CPU capability {torch.backends.cpu.get_cpu_capability()}; bf16 {'native' if native else 'emulated'}: "
          f"{evidence}")
    print(f"# {args.arch} {args.input_size}px batch {args.batch} decoder {args.decoder_width}, {args.device}, "
          f"{args.threads} threads, median of {args.steps} steps")
    print(f"{'variant':<10}{'precision':<11}{'layout':<15}{'ms/step':>9}{'img/s':>8}{'peak MB':>9}")
    results = {}
    for variant, precision, layout in itertools.product(args.variants, args.precisions, args.layouts):
        cmd = [sys.executable, __file__, "--variant", variant, "--precision", precision]
        cmd += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k in ("arch", "input_size", "batch", "decoder_width", "steps", "warmup", "threads", "device")]
        cmd += ["--channels-last"] if layout == "channels_last" else []
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        results[variant, precision, layout] = out
        print(f"{variant:<10}{precision:<11}{layout:<15}{out['ms_per_step']:>9.0f}{out['img_per_s']:>8.1f}{out['peak_mb']:>9.0f}", flush=True)

    def ms(*key):
        return results[key]["ms_per_step"] if key in results else float("nan")

    print(f"sparse / zero_out (fp32, contiguous): {ms('sparse', 'fp32', 'contiguous') / ms('zero_out', 'fp32', 'contiguous'):.3f}")
    if "bf16" in args.precisions:
        print(f"sparse fp32 / bf16+channels_last:     "
              f"{ms('sparse', 'fp32', 'contiguous') / ms('sparse', 'bf16', 'channels_last'):.2f}x")


if __name__ == "__main__":
    main()
