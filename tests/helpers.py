"""Helpers shared by the training-run tests."""
import builtins
import importlib
import io
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from PIL import Image

TESTS = Path(__file__).resolve().parent
# Deadlines for child processes: minutes, so a slow shared machine does not flake, but finite, so a stalled child
# fails the test (with its stderr) instead of hanging the suite.
RUN_TIMEOUT = 600.0
GRACE = 30.0  # for a killed child's output to drain


def require(module: str) -> Any:
    """A pipeline dependency the tests need (Detectron2, the SLURM executor plugin): imported, or its tests skipped
    where it is not installed. ``make test`` installs every one and sets ``SPARK_TESTS_REQUIRE_ALL=1``: there a
    missing one fails the run instead of quietly skipping its tests."""
    if not os.environ.get("SPARK_TESTS_REQUIRE_ALL"):
        return pytest.importorskip(module)
    try:
        return importlib.import_module(module)
    except ImportError as err:
        pytest.fail(f"{module} does not import ({err}); `make setup` installs it", pytrace=False)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc), parents first; torchrun starts each worker in a session of
    its own, so killing the launcher's process group would leave the ranks running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` and every descendant, then reap it."""
    for pid in process_tree(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def tail(path_or_text: Path | str | None, chars: int = 3000) -> str:
    if isinstance(path_or_text, Path):
        path_or_text = path_or_text.read_text(errors="replace") if path_or_text.exists() else ""
    return (path_or_text or "")[-chars:]


def run_bounded(command: list[str], *, timeout: float = RUN_TIMEOUT, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True)`` with a deadline: past ``timeout`` seconds the
    child and all its descendants are killed and the test fails, showing the tail of the child's stderr."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        try:
            stdout, stderr = process.communicate(timeout=GRACE)
        except subprocess.TimeoutExpired:  # a descendant that escaped the kill holds the pipes open
            stdout, stderr = "", "(no output: the pipes stayed open after the kill)"
        pytest.fail(f"{' '.join(map(str, command))} did not finish within {timeout:.0f} s (killed); stderr tail:\n"
                    f"{tail(stderr)}", pytrace=False)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_two_gloo_ranks(script: str, params: Path, run_dir: Path, timeout: float = RUN_TIMEOUT) -> list[Any]:
    """Run ``script PARAMS RUN_DIR`` under ``torchrun --nproc_per_node 2`` (gloo on CPU, one thread per rank,
    ``tests/`` importable); each rank saves what it reports to ``RUN_DIR/rank<R>.pt``, returned in rank order."""
    path = run_dir.parent / "rank.py"
    path.write_text(script)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    result = run_bounded([str(torchrun), "--standalone", "--nproc_per_node", "2", str(path), str(params),
                          str(run_dir)], cwd=run_dir.parent, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(run_dir / f"rank{r}.pt") for r in (0, 1)]


@contextmanager
def gloo_nodes(program: list[str], cwd: Path, nodes: int = 2, env: dict[str, str] | None = None
               ) -> Iterator[list[subprocess.Popen]]:
    """Start ``nodes`` torchrun launchers on this machine as the nodes of one job (c10d rendezvous, one gloo
    process each, the command :func:`eval.pipeline.launch.node_command` gives every node), each running
    ``python PROGRAM`` with ``tests/`` importable; stderr goes to ``cwd/node<N>.stderr``.

    The rendezvous store is hosted here, on a port the OS assigns while it is held (no free port picked, released
    and hoped for), for as long as the block runs; the launchers, finding the port taken, join it as clients.
    Launchers still running when the block ends are killed."""
    from torch.distributed import TCPStore

    from eval.pipeline.launch import node_command
    from eval.pipeline.resources import StageResources

    store = TCPStore("127.0.0.1", 0, is_master=True, multi_tenant=True, wait_for_workers=False)
    command = node_command(StageResources(nodes=nodes, threads=1), f"127.0.0.1:{store.port}", "test", program)
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    processes = []
    try:
        for node in range(nodes):
            with (cwd / f"node{node}.stderr").open("w") as stderr:
                processes.append(subprocess.Popen(command, cwd=cwd, env=env, stderr=stderr, text=True))
        yield processes
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                kill_tree(process)
        del store


def wait_all(processes: list[subprocess.Popen], cwd: Path, timeout: float = RUN_TIMEOUT) -> list[int]:
    """The exit codes of ``processes``; past ``timeout`` seconds all are killed and the test fails."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(deadline - time.monotonic(), 0.1)) for p in processes]
    except subprocess.TimeoutExpired:
        for p in processes:
            kill_tree(p)
        pytest.fail(f"nodes still running after {timeout:.0f} s (killed); node 0 stderr:\n"
                    f"{tail(cwd / 'node0.stderr')}", pytrace=False)


def record_train_steps(draws: list | None = None) -> list[dict[str, Any]]:
    """In a rank script: wrap the training loop's ``train_step`` so that every optimizer step appends to the returned
    list the weights it started from, its input batch, the loss and gradient norm it reported, the gradients it
    stepped with (after all-reduce and clipping) and the tensors appended to ``draws`` during the step (e.g. the
    masks drawn)."""
    import spark.engine.run as run_module

    steps: list[dict[str, Any]] = []
    step = run_module.train_step

    def recording_step(loss_fn, optimizer, batch, **kwargs):
        if draws is not None:
            draws.clear()
        params = dict(run_module.unwrap(kwargs["module"]).named_parameters())
        weights = {k: p.detach().clone() for k, p in params.items()}
        result = step(loss_fn, optimizer, batch, **kwargs)
        steps.append({
            "weights": weights,
            "batch": [t.detach().clone() for t in batch] if isinstance(batch, (tuple, list)) else batch.clone(),
            "loss": result.loss, "grad_norm": result.grad_norm,
            "grads": {k: p.grad.detach().clone() for k, p in params.items() if p.grad is not None},
            "draws": [t.detach().clone() for t in draws] if draws is not None else [],
        })
        return result

    run_module.train_step = recording_step
    return steps


def relative_errors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                    floor: float = 0.0) -> dict[str, float]:
    """Per tensor ``|actual - expected| / max(|expected|, floor * |all of expected|)`` (Frobenius norms)."""
    assert actual.keys() == expected.keys(), sorted(actual.keys() ^ expected.keys())[:5]
    total = torch.cat([e.double().flatten() for e in expected.values()]).norm().item()
    errors = {}
    for k, e in expected.items():
        a, e = actual[k].double(), e.double()
        scale = max(e.norm().item(), floor * total)
        errors[k] = (a - e).norm().item() / scale if scale else (a - e).norm().item()
    return errors


def assert_all_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], rtol: float,
                     what: str, floor: float = 0.0) -> None:
    """Every tensor of ``actual`` within ``rtol`` of ``expected``, relative to the larger of its own norm and
    ``floor`` times the norm of all tensors together (see :func:`relative_errors`)."""
    errors = relative_errors(actual, expected, floor)
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    assert worst[0][1] <= rtol, f"{what}: {sum(e > rtol for e in errors.values())}/{len(errors)} tensors off " \
                                f"by more than {rtol:g} (relative), worst {worst}"


# Two gloo ranks against one process on the same global batch, in fp32 with the same images, masks and BN grouping:
# what differs is the order of the reductions (BN moments merged over ranks, gradients all-reduced, sums over half
# the images). Measured (SparK pretraining): losses and masked-BN statistics within ~1e-7 and ~5e-6, per-tensor
# gradients typically within ~2e-6 (up to 1e-5; one fp32 process is as far from a float64 one), and an optimizer
# step from the same gradients and state is exact. Two things are not rounding-sized in fp32, for one process as
# for two ranks:
# - ReLU kinks: an activation within rounding of 0 (or 6) takes the other branch in one of the computations and
#   every gradient below it moves by ~1e-3 (measured 1.3e-3 on the ranks at one step of 8, and as much between a
#   fp32 and a float64 process at another). Which steps this hits depends on the CPU's kernels, so single tensors
#   at single steps (and the gradient norm) are held to DDP_KINK_RTOL; DDP_RTOL applies to the losses and to the
#   median over all steps and tensors, which a kink cannot move.
# - Near-exact cancellations: a tensor whose gradient is < 1e-3 of the whole (the weight of a BN normalising 4
#   visible sites: norm 2e-8 of 0.4) carries fp32 errors of ~3e-3 of itself; its error is measured against
#   DDP_FLOOR x the norm of all gradients.
# The bugs these tests exist for (gradients summed instead of averaged, no averaging, the other rank's masks,
# unsynchronised masked BNs, synchronised decoder BNs) are off by a median >= 0.65 and a max >= 1.3 per tensor at
# every step; duplicated shards and shared masks fail the tests' data and mask checks.
DDP_RTOL = 2e-5
DDP_KINK_RTOL = 0.1
DDP_FLOOR = 1e-3


def single_threaded(request: pytest.FixtureRequest) -> None:
    """One torch thread for the rest of the test (restored after it). For the small tensors of a one-process
    reference a second OpenMP thread only adds synchronisation, which costs ~20x on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))


def assert_steps_match_one_process(ranks: list[dict[str, Any]], model: torch.nn.Module,
                                   optimizer: torch.optim.Optimizer,
                                   reference_loss: Callable[[list[dict]], torch.Tensor],
                                   schedule: Callable[[int], None], clip: float | None) -> None:
    """Replay the steps ``record_train_steps`` recorded on each rank (``ranks[r]["steps"]``, final weights in
    ``ranks[r]["params"]``) in this process: every step starts ``model`` from the ranks' weights, sets the step's
    lr/wd (``schedule(i)``), and ``reference_loss(step_records)`` computes the loss of the global batch, whose
    value, gradients and gradient norm must be the ranks'. Then ``optimizer`` steps with the ranks' gradients
    (so its state follows theirs) and must reach the ranks' next weights. Comparing each step from the ranks'
    weights, rather than two free-running trajectories, matters for Adam-type optimizers: they divide each gradient
    element by its own magnitude, which turns rounding differences of small elements into update differences that
    compound from step to step (fp32 and float64 runs of one process differ by ~1e-3 after 8 LAMB steps)."""
    steps = list(zip(*(r["steps"] for r in ranks)))
    params = dict(model.named_parameters())
    assert_same_weights(steps[0][0]["weights"], {k: p.detach() for k, p in params.items()})  # the same init
    after = [step[0]["weights"] for step in steps[1:]] + [ranks[0]["params"]]
    grad_errors: dict[tuple[int, int, str], float] = {}
    for i, (step, next_weights) in enumerate(zip(steps, after)):
        start = step[0]["weights"]
        assert_same_weights(start, step[1]["weights"])
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(start[k])
        schedule(i)
        optimizer.zero_grad(set_to_none=True)
        loss = reference_loss(list(step))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in params.values() if p.grad is not None],
                                                   clip or math.inf)
        for rank, r in enumerate(step):
            where = f"step {i + 1}, rank {rank}"
            assert r["loss"] == pytest.approx(loss.item(), rel=DDP_RTOL), f"{where}: loss"
            assert r["grad_norm"] == pytest.approx(grad_norm.item(), rel=DDP_KINK_RTOL), f"{where}: gradient norm"
            errors = relative_errors(r["grads"], {k: p.grad for k, p in params.items()}, DDP_FLOOR)
            grad_errors.update({(i + 1, rank, k): e for k, e in errors.items()})
        with torch.no_grad():
            for k, p in params.items():
                p.grad.copy_(step[0]["grads"][k])
        optimizer.step()
        assert_all_close({k: next_weights[k] - start[k] for k in params},
                         {k: p.detach() - start[k] for k, p in params.items()}, DDP_RTOL,
                         f"step {i + 1}: weight update", floor=DDP_FLOOR)
    worst = sorted(grad_errors.items(), key=lambda kv: -kv[1])[:3]
    assert worst[0][1] <= DDP_KINK_RTOL, f"gradients (step, rank, tensor): worst relative errors {worst}"
    median = float(np.median(list(grad_errors.values())))
    assert median <= DDP_RTOL, f"gradients: median relative error {median:.2g} over all steps and tensors"


def kill_after_first_checkpoint(cli_args: list[str], run_dir: Path, timeout: float = RUN_TIMEOUT
                                ) -> tuple[int, subprocess.CompletedProcess]:
    """Run ``python -m eval.cli CLI_ARGS`` (a training stage writing ``run_dir``) until its first checkpoint is
    written, SIGKILL it there, then run the same command again to completion. Returns the epoch the killed run had
    checkpointed and the rerun. The first run goes through ``stop_after_first_checkpoint.py``, which stops right
    after writing that checkpoint until killed: the kill lands there however slow the machine, never after the run
    has finished. Each phase has a ``timeout`` deadline (a hang guard); past it the child is killed and the test
    fails with its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    marker = run_dir.parent / f"{run_dir.name}.checkpointed"
    stderr_path = run_dir.parent / f"{run_dir.name}.killed.stderr"  # a file: an unread pipe could block the child
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen([sys.executable, str(TESTS / "stop_after_first_checkpoint.py"), str(marker),
                                    *cli_args], cwd=run_dir.parent, env=env, stderr=stderr, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists() and process.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint in {run_dir} within {timeout:.0f} s (killed); stderr tail:\n"
                            f"{tail(stderr_path)}", pytrace=False)
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            kill_tree(process)
    assert marker.exists() and process.returncode == -signal.SIGKILL, \
        f"exited {process.returncode} before its first checkpoint:\n{tail(stderr_path)}"
    killed_at = torch.load(run_dir / "checkpoint.pth", weights_only=True)["epoch"]
    left = {p.name for p in run_dir.iterdir()}
    assert not {"encoder.pth", "metrics.json", "reconstruction.png"} & left  # results appear only on completion
    resumed = run_bounded([sys.executable, "-m", "eval.cli", *cli_args], cwd=run_dir.parent, env=env,
                          timeout=timeout)
    assert resumed.returncode == 0, resumed.stderr
    return killed_at, resumed


@contextmanager
def counting_reads(path: Path) -> Iterator[list[str]]:
    """Every opening of ``path`` in this process while the block runs (``open``, ``io.open`` and so every
    ``Path.read_text``/``read_bytes``), one mode string per opening."""
    target, opened, real_open = Path(path).resolve(), [], io.open

    def counting_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == target:
            opened.append(mode)
        return real_open(file, mode, *args, **kwargs)

    builtins.open = io.open = counting_open
    try:
        yield opened
    finally:
        builtins.open = io.open = real_open


def write_images(root: Path, count: int, size: int = 72, seed: int = 0) -> Path:
    """Smooth colour ramps along a random direction (one per image, per-channel frequency and phase): a masked
    patch is predictable from its visible neighbours, so the reconstruction loss can fall quickly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        ramps = [np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6)) for _ in range(3)]
        path = root / f"class{i % 3}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((np.stack(ramps, -1) + 1) * 127.5).astype(np.uint8)).save(path)
    return root


def detection_config(**keys: Any) -> Any:
    """A ``DetectionConfig`` built directly on the authors' ResNet 1x recipe (whatever the arch), ``keys`` over it:
    errors name the bare key, as any dataclass built in Python does."""
    import dataclasses

    from eval.detection.config import DetectionConfig
    from eval.detection.recipes import RECIPES

    return DetectionConfig(**{"recipe": "resnet50", **dataclasses.asdict(RECIPES["resnet50"]), **keys})
