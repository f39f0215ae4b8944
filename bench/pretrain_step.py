"""Speed and peak memory of one pretraining step, as paired comparisons.

A step is what the pretraining run does per batch (``spark.engine.train_step``: forward, backward, gradient clip,
LAMB). Variants: ``dense`` (the timm encoder alone on the full image, no decoder), ``sparse`` (SparK) and
``zero_out`` (SparK's ablation: the dense encoder on the zero-masked image); each eager and under
``torch.compile`` (the compiled model takes the mask as an input, as in the pretraining run), in fp32 and in
bf16 autocast where the device computes bf16 natively.

Every configuration runs in its own worker process, so its peak memory is its own. The workers of one precision
stay alive together and take turns: a round runs ``--steps`` steps in each, in alternating order (ABC..CBA), so
that drift (clock, other load) falls on all alike. A ratio A/B is computed per round from that round's medians;
the table reports the median of those ratios, its 95 % interval (order statistics, no assumption on the
distribution) and their range. Each worker starts with an empty inductor cache, so
a compiled configuration's first step is the full compile. The first line names the CPU capability (or the GPU).
On a GPU, peak memory is ``torch.cuda.max_memory_allocated``, and a worker hands its cached blocks back after
each turn, so the idle workers' caches do not crowd the one that runs.

    python bench/pretrain_step.py                 # resnet18, 128 px, batch 32, decoder width 256
    python bench/pretrain_step.py --modes eager --rounds 5
    python bench/pretrain_step.py --arch resnet50 --input-size 224 --batch 16 --decoder-width 768
    python bench/pretrain_step.py --device cuda --arch resnet50 --input-size 224 --batch 64 --decoder-width 768 \
        --channels-last --precisions bf16 --modes eager
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = ("dense", "sparse", "zero_out")
MODES = ("eager", "compiled")
SHAPE_ARGS = ("arch", "input_size", "batch", "decoder_width", "threads", "device", "channels_last")


def build_step(args: argparse.Namespace):
    """One training step of the configuration in ``args`` on a fixed synthetic batch, as a closure."""
    from timm.optim import Lamb

    from spark.model import SparKConfig, build_spark
    from spark.encoder import create_encoder
    from spark.engine import Precision, train_step

    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.input_size, args.input_size, generator=generator).to(device)
    precision = Precision(args.precision, args.channels_last)
    if args.variant == "dense":
        model, scales = create_encoder(args.arch)
        indices = list(scales.indices)
        forward = model.forward_intermediates

        def loss_fn(x):
            return sum(f.float().square().mean() for f in forward(x, indices=indices, intermediates_only=True))
    else:
        model = build_spark(SparKConfig(arch=args.arch, input_size=args.input_size, decoder_width=args.decoder_width,
                                        encoder_mode=args.variant))
        visible = model.sample_visible(args.batch, device, generator=generator)
        forward = model

        def loss_fn(x):
            return forward(x, visible)

    model = precision.prepare_model(model.to(device).train())
    images = precision.prepare_input(images, device)
    if args.mode == "compiled":
        forward = torch.compile(forward)
    optimizer = Lamb(model.parameters(), lr=1e-4, betas=(0.9, 0.95))

    def step() -> None:
        train_step(loss_fn, optimizer, images, module=model, where="bench", clip=5.0, precision=precision)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(args: argparse.Namespace) -> None:
    """Worker: build, warm up, then answer ``run N`` with N step times and ``memory`` with peak figures."""
    from spark.engine import retain_freed_memory, set_deterministic

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        retain_freed_memory()  # as the training commands do there
    set_deterministic(False)  # as the training runs do by default: cuDNN picks its fastest kernels
    try:
        step = build_step(args)
        built_mb = peak_mb(device)
        start = time.perf_counter()
        step()  # compiles, when compiled
        first_s = time.perf_counter() - start
        for _ in range(args.warmup):
            step()
        release_cache(device)
    except Exception as err:  # noqa: BLE001 - reported as the configuration's result
        reply({"error": f"{type(err).__name__}: {err}".splitlines()[0]})
        return
    reply({"first_step_s": first_s})
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "run":
            times = []
            for _ in range(int(rest[0])):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            release_cache(device)
            reply({"times": times})
        elif command == "memory":
            reply({"peak_mb": peak_mb(device), "step_mb": peak_mb(device) - built_mb})
        else:
            return


def release_cache(device: torch.device) -> None:
    """Give the GPU memory this worker's allocator keeps cached back, for the worker whose turn is next."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reply(message: dict) -> None:
    print(json.dumps(message), flush=True)


class Worker:
    """A configuration's process, driven over its stdin/stdout."""

    def __init__(self, args: argparse.Namespace, variant: str, mode: str, precision: str) -> None:
        self.name = (variant, mode, precision)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", variant, mode, precision]
        for key in SHAPE_ARGS:
            value = getattr(args, key)
            if value is True:
                cmd.append(f"--{key.replace('_', '-')}")
            elif value is not False:
                cmd.append(f"--{key.replace('_', '-')}={value}")
        cmd.append(f"--warmup={args.warmup}")
        # A fresh inductor cache: the first step's time is what a first compiled run pays
        self.cache = tempfile.TemporaryDirectory(prefix="inductor-cache-")
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": self.cache.name}
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        started = self.receive()
        self.error = started.get("error")
        self.first_step_s = started.get("first_step_s")

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.receive()

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited with code {self.process.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()
        self.cache.cleanup()


def measure(args: argparse.Namespace, precision: str) -> dict:
    """Per configuration of ``precision``: per-round median step times, first-step time and memory, or the error
    that stopped it."""
    workers, failed = [], {}
    try:
        for variant, mode in itertools.product(args.variants, args.modes):
            worker = Worker(args, variant, mode, precision)
            if worker.error:
                failed[worker.name] = {"error": worker.error}
                worker.close()
                continue
            workers.append(worker)
            print(f"#   started {variant} {mode} {precision} (first step {worker.first_step_s:.1f} s)",
                  file=sys.stderr, flush=True)
        rounds: dict[tuple, list[float]] = {w.name: [] for w in workers}
        for r in range(args.rounds):
            for worker in workers if r % 2 == 0 else workers[::-1]:
                rounds[worker.name].append(statistics.median(worker.ask(f"run {args.steps}")["times"]))
        return {**{w.name: {"rounds": rounds[w.name], "first_step_s": w.first_step_s, **w.ask("memory")}
                   for w in workers}, **failed}
    finally:
        for worker in workers:
            worker.close()


def summary(result: dict, batch: int) -> dict:
    """A configuration's median step time, img/s, first step and memory (or its error), as numbers."""
    if "error" in result:
        return {"error": result["error"]}
    seconds = statistics.median(result["rounds"])
    return {"ms_per_step": seconds * 1000, "img_per_s": batch / seconds, "first_step_s": result["first_step_s"],
            "peak_mb": result["peak_mb"], "step_mb": result["step_mb"]}


def ratio(results: dict, a: tuple, b: tuple) -> str:
    """Median over rounds of the per-round time ratio a / b, with its 95 % interval and range."""
    if "rounds" not in results.get(a, {}) or "rounds" not in results.get(b, {}):
        return ""
    ratios = sorted(x / y for x, y in zip(results[a]["rounds"], results[b]["rounds"]))
    low, high = median_interval(ratios)
    return f"{statistics.median(ratios):.3f} [{low:.3f}, {high:.3f}] ({ratios[0]:.3f}-{ratios[-1]:.3f})"


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval for the median: the order statistics k and n+1-k, k the largest rank whose
    binomial tail P(Bin(n, 1/2) < k) stays within (1 - level) / 2 (the range when n is too small for it)."""
    n, ordered = len(values), sorted(values)
    tail, k = 0.0, 0
    while tail + math.comb(n, k) / 2 ** n <= (1 - level) / 2:
        tail += math.comb(n, k) / 2 ** n
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--decoder-width", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3, help="steps per configuration and round")
    parser.add_argument("--warmup", type=int, default=2, help="steps after the first, before timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"],
                        help="default: fp32, plus bf16 where the device computes it natively")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--serve", nargs=3, metavar=("VARIANT", "MODE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        args.variant, args.mode, args.precision = args.serve
        serve(args)
        return

    from spark.engine.precision import native_bf16

    device = torch.device(args.device)
    native, evidence = native_bf16(device)
    precisions = args.precisions or (["fp32", "bf16"] if native else ["fp32"])
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"# {where}; bf16 {'native' if native else 'emulated'}: {evidence}; torch {torch.__version__}")
    print(f"# {args.arch} {args.input_size} px, batch {args.batch}, decoder width {args.decoder_width}, "
          f"{'channels_last' if args.channels_last else 'contiguous'}, {args.device}, {args.threads} threads; "
          f"{args.rounds} alternating rounds of {args.steps} steps")
    results = {}
    for precision in precisions:
        results.update(measure(args, precision))
    print("| variant | mode | precision | ms/step | img/s | first step s | peak MB | step MB |")
    print("|---|---|---|---|---|---|---|---|")
    for (variant, mode, precision), r in results.items():
        r = summary(r, args.batch)
        if "error" in r:
            print(f"| {variant} | {mode} | {precision} | failed: {r['error']} | | | | |")
            continue
        print(f"| {variant} | {mode} | {precision} | {r['ms_per_step']:.0f} | {r['img_per_s']:.1f} | "
              f"{r['first_step_s']:.1f} | {r['peak_mb']:.0f} | {r['step_mb']:.0f} |")
    print("\n| time ratio: median of per-round ratios [95 % interval] (range) | " + " | ".join(
        f"{mode} {precision}" for precision in precisions for mode in args.modes) + " |")
    print("|---|" + "---|" * (len(precisions) * len(args.modes)))
    for a, b in (("sparse", "zero_out"), ("sparse", "dense"), ("zero_out", "dense")):
        print(f"| {a} / {b} | " + " | ".join(ratio(results, (a, m, p), (b, m, p))
                                           for p in precisions for m in args.modes) + " |")
    if set(MODES) <= set(args.modes):
        print("\n| compiled / eager | " + " | ".join(precisions) + " |")
        print("|---|" + "---|" * len(precisions))
        for variant in args.variants:
            print(f"| {variant} | " + " | ".join(ratio(results, (variant, "compiled", p), (variant, "eager", p))
                                                for p in precisions) + " |")


if __name__ == "__main__":
    main()
