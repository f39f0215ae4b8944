"""End-to-end pretraining runs on tiny generated images (CPU): outputs, resume, guards, DDP, CLI, learning."""
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

import spark.pretrain.trainer as trainer_module
import spark.engine.run as run_module
from eval.cli import main as cli
from spark.config import ConfigError
from spark.engine import DistEnv, Precision, cosine, seed_all, set_epoch, train_loader
from spark.engine.run import TimeLimit, TimeLimitReached
from spark.engine.step import NonFiniteError, apply_lr_wd, warmup_cosine
from spark.io import load_torch
from spark.model import SparK, build_spark
from spark.pretrain import PretrainConfig, pretrain
from spark.pretrain.data import ImageFiles, collate_images, list_images, normalize, train_transform
from spark.pretrain.knn import KnnMonitor, encoder_features, knn_top1
from spark.pretrain.optim import build_optimizer
from spark.sparse import MaskedBatchNorm
from helpers import (
    DDP_RTOL, TESTS, assert_all_close, assert_same_weights, assert_steps_match_one_process, counting_reads,
    gloo_nodes, kill_after_first_checkpoint, record_train_steps, run_two_gloo_ranks, single_threaded, tail, wait_all,
    write_images,
)

pytestmark = pytest.mark.usefixtures("isolated_run")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("data") / "images", 16)


@pytest.fixture(scope="module")
def knn_images(tmp_path_factory) -> Path:
    """An ImageFolder root for the k-NN monitor: 9 train and 5 val images of 3 classes (odd: uneven rank shards)."""
    root = tmp_path_factory.mktemp("knn")
    write_images(root / "train", 9, seed=1)
    write_images(root / "val", 5, seed=2)
    return root


def tiny(images: Path, **changes) -> PretrainConfig:
    """test_resnet (0.4 M parameters) at 64 px: 4 iterations of 4 images per epoch."""
    base = dict(data=str(images), arch="test_resnet", input_size=64, decoder_width=64, epochs=3, warmup_epochs=1,
                global_batch=4, base_lr=0.05, num_workers=0, vis_images=2, deterministic=True)
    return PretrainConfig(**{**base, **changes})


def write_params(path: Path, config: PretrainConfig) -> Path:
    path.write_text(yaml.safe_dump({"pretrain": {k: v for k, v in dataclasses.asdict(config).items() if v is not None}}))
    return path


def model_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_torch(run_dir / "checkpoint.pth")["model"]


def test_run_directory_contents(images, tmp_path):
    run = tmp_path / "run"
    model = pretrain(tiny(images), run)
    assert isinstance(model, SparK)
    assert {p.name for p in run.iterdir()} == {
        "checkpoint.pth", "encoder.pth", "metrics.json", "dvclive", "reconstruction.png", "config.yaml", "train.log",
        "run.json"}
    checkpoint = load_torch(run / "checkpoint.pth")
    assert checkpoint["epoch"] == 3 and len(checkpoint["history"]) == 3
    assert checkpoint["config"] == yaml.safe_load((run / "config.yaml").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epoch"] == 3 and set(metrics) == {"epoch", "loss", "lr", "weight_decay", "grad_norm", "img_per_s"}
    assert len((run / "dvclive/plots/metrics/loss.tsv").read_text().splitlines()) == 1 + 3
    log = (run / "train.log").read_text()
    assert "epoch 3/3  loss" in log
    expected = Precision.resolve("auto", False, torch.device("cpu"))  # the default follows this machine's CPU
    record = json.loads((run / "run.json").read_text())
    assert record["precision"] == expected.describe()
    assert record["world_size"] == 1 and record["dist_timeout_minutes"] == 60
    assert f"precision {expected.describe()}" in log
    timm_model = timm.create_model("test_resnet")
    missing, unexpected = timm_model.load_state_dict(load_torch(run / "encoder.pth"), strict=False)
    assert not unexpected and all(k.startswith("head.") or k.startswith("fc.") for k in missing)
    assert Image.open(run / "reconstruction.png").size == (4 * 66 + 2, 2 * 66 + 2)  # 4 columns, 2 images

    finished = (run / "checkpoint.pth").stat().st_mtime_ns
    pretrain(tiny(images), run)  # the same command again: nothing left to do
    assert (run / "checkpoint.pth").stat().st_mtime_ns == finished
    with pytest.raises(ConfigError, match="different values of epochs"):
        pretrain(tiny(images, epochs=4), run)
    pretrain(tiny(images, epochs=4), run, restart_on_change=True)  # what the workflows do: a new recipe starts over
    assert load_torch(run / "checkpoint.stale.pth")["epoch"] == 3
    assert [len(load_torch(run / "checkpoint.pth")["history"]), json.loads((run / "metrics.json").read_text())["epoch"]] == [4, 4]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(images, tmp_path, monkeypatch):
    calls = {"n": 0}
    forward = SparK.forward

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        loss = forward(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] == 6 else loss  # epoch 2, iteration 2

    monkeypatch.setattr(SparK, "forward", poisoned)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"loss is nan at epoch 2/3, iteration 2/4"):
        pretrain(tiny(images), run)
    checkpoint = load_torch(run / "checkpoint.pth")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert not (run / "metrics.json").exists() and not (run / "encoder.pth").exists()  # no result of a failed run


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(images, tmp_path):
    config = tiny(images, epochs=6, num_workers=2)
    pretrain(dataclasses.replace(config, num_workers=0), tmp_path / "uninterrupted")  # worker count is irrelevant

    params = write_params(tmp_path / "params.yaml", config)
    job = ["pretrain", "--params", str(params), "--out", str(tmp_path / "killed")]
    killed_at, resumed = kill_after_first_checkpoint(job, tmp_path / "killed")
    assert killed_at == 1  # stopped right after its first checkpoint
    assert f"resuming {tmp_path / 'killed'} after epoch {killed_at}/6" in resumed.stderr
    assert_same_weights(model_state(tmp_path / "uninterrupted"), model_state(tmp_path / "killed"))
    loss_rows = (tmp_path / "killed/dvclive/plots/metrics/loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in loss_rows[1:]] == ["1", "2", "3", "4", "5", "6"]


RANK_SCRIPT = """
import os, sys, torch
from eval.pipeline.params import load_params
from spark.model import SparK
from spark.pretrain import PretrainConfig, pretrain
from spark.sparse import MaskedBatchNorm
import spark.pretrain.knn as knn
from helpers import record_train_steps
torch.set_num_threads(1)
gathered, gather = [], knn.gather_shards  # the k-NN monitor's features, as every rank votes with them
knn.gather_shards = lambda shard, total: gathered.append(gather(shard, total)) or gathered[-1]
masks = []
draw = SparK.sample_visible
def sample_visible(self, *args, **kwargs):  # the trainer draws one mask per (micro-)batch
    masks.append(draw(self, *args, **kwargs))
    return masks[-1]
SparK.sample_visible = sample_visible
steps = record_train_steps(draws=masks)
model = pretrain(PretrainConfig.parse(load_params(sys.argv[1])), sys.argv[2])
bns = {name: m for name, m in model.named_modules() if isinstance(m, MaskedBatchNorm)}
torch.save({"steps": steps, "params": {k: v.detach() for k, v in model.named_parameters()},
            "masked_bn": {f"{n}.{k}": v for n, m in bns.items() for k, v in m.named_buffers()},
            "synced": [m.sync for m in bns.values()], "knn_features": gathered},
           f"{sys.argv[2]}/rank{os.environ['RANK']}.pt")
"""


def fingerprints(images: torch.Tensor) -> list[bytes]:
    """Which images a batch holds (as a multiset), whatever their order."""
    return sorted(hashlib.sha1(x.numpy().tobytes()).digest() for x in images)


def ddp_reference_loss(model: SparK, ranks: list[dict], micro_batch: int) -> torch.Tensor:
    """The loss of one step's global batch in one process, with each rank's images and masks and the BN grouping
    of 2 ranks: the masked BNs of encoder and densify (moments synchronised across ranks) normalise a micro-batch
    of every rank at once, the decoder's dense BNs (per process: gloo has no SyncBatchNorm) one rank's micro-batch.
    The loss itself is the mean over all masked patches of the global batch."""
    images = [r["batch"].split(micro_batch) for r in ranks]
    masks = [torch.cat(r["draws"]).split(micro_batch) for r in ranks]
    parts = []
    for j in range(len(images[0])):
        x, visible = torch.cat([im[j] for im in images]), torch.cat([m[j] for m in masks])
        features = model.forward_encoder(x, visible)
        with model.visible_mask.use(visible):
            dense = [d(f, model.visible_mask.at(f.shape[-2:])) for d, f in zip(model.densify, features)]
        bounds = np.cumsum([0] + [len(im[j]) for im in images])
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            parts.append((x[lo:hi], model.decoder([t[lo:hi] for t in dense]), visible[lo:hi]))
    x, prediction, visible = (torch.cat(t) for t in zip(*parts))
    return model.forward_loss(x, prediction, visible)


@pytest.fixture(scope="module")
def two_rank_runs(images, knn_images, tmp_path_factory):
    """``run(compiled)``: the config, run directory and per-rank records of RANK_SCRIPT's pretraining on 2 gloo
    ranks (2 epochs of 4 steps, micro-batches of 1, fp32, the k-NN monitor every epoch), made once for the tests
    that compare with it."""
    runs = {}

    def run(compiled: bool):
        if compiled not in runs:
            work = tmp_path_factory.mktemp("compiled" if compiled else "eager")
            config = tiny(images, epochs=2, micro_batch=1, precision="fp32", deterministic=False, compile=compiled,
                          knn_data=str(knn_images), knn_k=3)
            params = write_params(work / "params.yaml", config)
            runs[compiled] = config, work / "run", run_two_gloo_ranks(RANK_SCRIPT, params, work / "run")
        return runs[compiled]
    return run


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_two_gloo_ranks_step_like_one_process_on_the_global_batch(two_rank_runs, images, request, compiled):
    """2 gloo ranks x 2 images (micro-batches of 1) against one process on the same 4 images per step, for 8 LAMB
    steps: the ranks split each global batch without overlap and draw different masks; from the ranks' weights,
    one process with their images and masks gets their loss and gradients (of the mean over the global batch);
    each step takes the ranks to the weights a one-process LAMB step gives, and the masked BNs' running statistics
    are those of the global batch. Compiled ranks (the masked BNs' collectives traced by torch.compile, under
    DDP's graph splitting) must match the same eager one-process reference."""
    config, run_dir, ranks = two_rank_runs(compiled)
    single_threaded(request)
    log = (run_dir / "train.log").read_text()
    assert "2 per rank, micro-batches of 1" in log
    assert f"model {'compiled' if compiled else 'eager'} (" in log
    assert load_torch(run_dir / "checkpoint.pth")["epoch"] == 2
    steps = list(zip(*(r["steps"] for r in ranks)))
    assert len(steps) == 2 * 4 and all(len(r["batch"]) == len(r["draws"]) == 2 for step in steps for r in step)

    # The data: at every step the two ranks hold, between them, exactly the 4 images one process loads.
    one = train_loader(ImageFiles(list_images(images), train_transform(config.input_size)), batch_size=4,
                       env=DistEnv(), seed=config.seed, num_workers=0, collate_fn=collate_images)
    batches = []
    for epoch in (1, 2):
        set_epoch(one, epoch)
        batches += [normalize(batch) for batch, _ in one]
    for i, (step, batch) in enumerate(zip(steps, batches)):
        assert fingerprints(torch.cat([r["batch"] for r in step])) == fingerprints(batch), f"step {i + 1}"

    # The masks: valid, and drawn independently per rank (2 of 4 cells visible: 6 possible masks per image).
    masks = [torch.cat([torch.cat(r["draws"]) for r in rank_steps]) for rank_steps in zip(*steps)]
    assert all(m.shape == (16, 1, 2, 2) and (m.sum((1, 2, 3)) == 2).all() for m in masks)
    same = (masks[0] == masks[1]).flatten(1).all(1).float().mean().item()
    assert same < 0.5, f"{same:.0%} of the images got the other rank's mask (independent draws: ~1/6)"

    # The reference: one process with the same initial weights, schedule and optimizer, step by step.
    seed_all(config.seed)
    model = build_spark(config.model_config())
    optimizer = build_optimizer(model, config)
    iters, total = 4, 8
    assert_steps_match_one_process(
        ranks, model, optimizer, lambda step: ddp_reference_loss(model, step, config.micro_batch),
        lambda i: apply_lr_wd(optimizer, warmup_cosine(i, config.peak_lr, config.warmup_epochs * iters, total),
                              cosine(i, total, config.weight_decay, config.weight_decay_end)), config.clip)
    bns = {f"{n}.{k}": v for n, m in model.named_modules() if isinstance(m, MaskedBatchNorm)
           for k, v in m.named_buffers()}
    for rank, r in enumerate(ranks):
        assert_all_close(r["masked_bn"], bns, DDP_RTOL, f"rank {rank}: masked BN running statistics")
        assert r["synced"] and all(r["synced"]), "masked BNs must synchronise their moments under DDP"
    assert_same_weights(ranks[0]["params"], ranks[1]["params"])
    assert_knn_like_one_process(config, run_dir, ranks)


def assert_knn_like_one_process(config: PretrainConfig, run_dir: Path, ranks: list[dict]) -> None:
    """The k-NN monitor under DDP (before training, after epochs 1 and 2): each rank extracts its shard of the
    train and val images, and the gathered features, the same on both ranks, are what one process extracts from
    the same weights, in the same order; the recorded top-1 is what one process votes with them."""
    features = [r["knn_features"] for r in ranks]
    assert len(features[0]) == len(features[1]) == 3 * 2  # (train, val) per evaluation
    for a, b in zip(*features):
        assert torch.equal(a, b)
    monitor = KnnMonitor(config, DistEnv(), Precision.resolve("fp32", False, torch.device("cpu")))
    checkpoint = load_torch(run_dir / "checkpoint.pth")
    seed_all(config.seed)
    model = build_spark(config.model_config())
    initial = [encoder_features(model, loader, DistEnv(), monitor.precision)
               for loader in (monitor.train_loader, monitor.val_loader)]
    model.load_state_dict(checkpoint["model"])
    final = [encoder_features(model, loader, DistEnv(), monitor.precision)
             for loader in (monitor.train_loader, monitor.val_loader)]
    assert [len(f) for f in features[0]] == [9, 5] * 3
    for gathered, expected in zip(features[0][:2] + features[0][-2:], initial + final):
        torch.testing.assert_close(gathered, expected, rtol=1e-4, atol=1e-5)
    labels = monitor.train_labels, monitor.val_labels
    for value, (train, val) in ((checkpoint["knn_top1_init"], initial), (checkpoint["history"][-1]["knn_top1"], final)):
        assert value == knn_top1(train, labels[0], val, labels[1], config.knn_k, config.knn_temperature)


def test_two_nodes_train_like_one_node_of_two_processes_and_resume_after_a_node_is_killed(two_rank_runs,
                                                                                             tmp_path):
    """Two launchers on this machine as the nodes of one job (c10d rendezvous, one gloo process each) take the
    same steps as one node of two processes: bitwise the same losses, gradients and weights on each rank. Then a
    two-node run is cut after its first checkpoint: node 1 is killed, node 0's process (waiting for it) is
    stopped as srun's --kill-on-bad-exit would; the same two launchers again resume it to the weights of the
    uninterrupted run."""
    _, one_node_run, one_node = two_rank_runs(False)
    params, two = one_node_run.parent / "params.yaml", tmp_path / "two"
    two.mkdir()
    with gloo_nodes([str(one_node_run.parent / "rank.py"), str(params), str(two)], tmp_path) as nodes:
        assert wait_all(nodes, tmp_path) == [0, 0]
    two_nodes = [torch.load(two / f"rank{r}.pt") for r in (0, 1)]
    for rank, (one, other) in enumerate(zip(one_node, two_nodes)):
        assert [s["loss"] for s in one["steps"]] == [s["loss"] for s in other["steps"]], f"rank {rank}"
        for step, (a, b) in enumerate(zip(one["steps"], other["steps"])):
            assert torch.equal(a["batch"], b["batch"]), f"rank {rank}, step {step + 1}: data"
            assert_same_weights(a["grads"], b["grads"])
        assert_same_weights(one["params"], other["params"])

    killed = tmp_path / "killed"
    job = ["pretrain", "--params", str(params), "--out", str(killed)]
    checkpointed = tmp_path / "checkpointed"  # stop_after_first_checkpoint.py: then the ranks stand still
    with gloo_nodes([str(TESTS / "stop_after_first_checkpoint.py"), str(checkpointed), *job], tmp_path) as nodes:
        deadline = time.monotonic() + 600  # node 1 is killed first on leaving
        while not checkpointed.exists():
            assert all(node.poll() is None for node in nodes), tail(tmp_path / "node0.stderr")
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.05)
    assert load_torch(killed / "checkpoint.pth")["epoch"] == 1 and not (killed / "encoder.pth").exists()
    with gloo_nodes(["-m", "eval.cli", *job], tmp_path) as nodes:
        assert wait_all(nodes, tmp_path) == [0, 0]
    log = (killed / "train.log").read_text()
    assert "resuming" in log
    final = model_state(killed)
    assert_same_weights(two_nodes[0]["params"], {k: final[k] for k in two_nodes[0]["params"]})
    # The k-NN history survives the kill: the initial value measured once, by the first job, and kept.
    assert log.count("k-NN top-1 before training") == 1
    uninterrupted = load_torch(one_node_run / "checkpoint.pth")
    knn = [record["knn_top1"] for record in uninterrupted["history"]]
    metrics = json.loads((killed / "metrics.json").read_text())
    assert [metrics["knn_top1_init"], metrics["knn_epochs"], metrics["knn_top1"]] == [
        uninterrupted["knn_top1_init"], [1, 2], knn[-1]]
    rows = (killed / "dvclive/plots/metrics/knn_top1.tsv").read_text().splitlines()
    assert [(int(step), float(value)) for step, value in (row.split("\t") for row in rows[1:])] == [(1, knn[0]),
                                                                                                (2, knn[1])]


def test_compiled_run_takes_masks_as_inputs_and_matches_eager(images, tmp_path, monkeypatch):
    """``compile: true``: every step's fp32 loss is the eager model's on the same weights, images and mask (to
    1e-5); the mask is a graph input, so new masks, steps and epochs compile nothing new. Killed in its last epoch,
    the run resumes from its checkpoint (plain parameter names) where it stopped and goes on matching eager;
    run.json records the decision."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    masks, graphs = [], []
    draw, run_epoch = SparK.sample_visible, trainer_module.Pretrainer.run_epoch

    def recording_mask(self, *args, **kwargs):
        masks.append(draw(self, *args, **kwargs))
        return masks[-1]

    def killed_in_epoch_3(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt
        record = run_epoch(self, epoch)
        graphs.append(counters["stats"]["unique_graphs"])
        return record

    monkeypatch.setattr(SparK, "sample_visible", recording_mask)
    monkeypatch.setattr(trainer_module.Pretrainer, "run_epoch", killed_in_epoch_3)
    monkeypatch.setattr(run_module, "train_step", run_module.train_step)  # restored after the test
    steps = record_train_steps(draws=masks)
    config = tiny(images, epochs=3, compile=True, precision="fp32", deterministic=False)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, run_dir)
    assert len(steps) == 8 and len(graphs) == 2
    assert graphs[0] >= 1 and graphs[1] == graphs[0], f"graphs compiled by the end of each epoch: {graphs}"
    saved = model_state(run_dir)  # epoch 2's
    eager = build_spark(config.model_config()).train()
    assert list(saved) == list(eager.state_dict())

    monkeypatch.setattr(trainer_module.Pretrainer, "run_epoch", run_epoch)
    pretrain(config, run_dir)
    assert len(steps) == 12
    assert_same_weights(steps[8]["weights"], {k: saved[k] for k in steps[8]["weights"]})
    for i, step in enumerate(steps):
        eager.load_state_dict(step["weights"], strict=False)
        [visible] = step["draws"]
        with torch.no_grad():
            loss = eager(step["batch"], visible).item()
        assert abs(loss - step["loss"]) <= 1e-5, f"step {i + 1}: compiled {step['loss']:.8f}, eager {loss:.8f}"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["compile"] == "compiled (compiled as configured)" and record["resumed"] is True


def out_of_memory_above(limit: int, sizes: list[int]):
    """Pretrainer.model_loss that runs out of memory on passes of more than ``limit`` images."""
    real = trainer_module.Pretrainer.model_loss

    def model_loss(self, model, images):
        sizes.append(len(images))
        if len(images) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, model, images)
    return model_loss


def test_auto_trains_exactly_as_the_size_it_chose(images, tmp_path, monkeypatch):
    """The probe (on examples, before training) runs out of memory at 4 and 2 images and fits 1; the run then trains
    in micro-batches of 1, records it, and ends with the weights of a run told micro_batch: 1 (the probe changed
    no BN statistics and drew from no random generator the run uses)."""
    sizes = []
    monkeypatch.setattr(trainer_module.Pretrainer, "model_loss", out_of_memory_above(1, sizes))
    pretrain(tiny(images, epochs=2, micro_batch="auto"), tmp_path / "auto")
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}  # probe, then 2 epochs x 4 steps x 4 passes of 1
    assert len(sizes) == 3 + 2 * 4 * 4
    record = json.loads((tmp_path / "auto/run.json").read_text())
    assert record["micro_batch"] == 1
    assert "micro-batches of 1 (auto)" in (tmp_path / "auto/train.log").read_text()
    pretrain(tiny(images, epochs=2, micro_batch=1), tmp_path / "explicit")
    assert_same_weights(model_state(tmp_path / "auto"), model_state(tmp_path / "explicit"))


def test_a_fitting_batch_is_one_pass(images, tmp_path):
    pretrain(tiny(images, epochs=1, warmup_epochs=0, micro_batch="auto"), tmp_path / "run")
    assert json.loads((tmp_path / "run/run.json").read_text())["micro_batch"] == 4  # the whole batch of 4


def job_clock(end: float, tick: float):
    """TimeLimit for one job that ends at ``end`` on a clock advancing ``tick`` seconds per reading: 2 readings per
    epoch timed (so each 'takes' ``tick`` seconds) and 1 per fit decision once a pace is known."""
    now = [0.0]

    def clock():
        now[0] += tick
        return now[0]
    return lambda _end, margin_s: TimeLimit(end, margin_s, clock=clock)  # the class, not run_module's patch


def test_a_job_stops_before_its_time_limit_and_the_next_resumes_to_the_same_weights(images, tmp_path,
                                                                                     monkeypatch):
    """A job of 90 s (no margin) at 10 s per epoch: it runs epochs 1-3 (at 90 s, the 4th would end past the limit),
    checkpoints epoch 3 although save_every skips it, and stops with TimeLimitReached; the next job runs epoch 4
    and ends with the weights of an uninterrupted run. A job too short for one epoch at the recorded pace stops at
    once, naming the runtime to raise, and changes nothing."""
    config = tiny(images, epochs=4, save_every=2, stop_margin_s=0)
    pretrain(config, tmp_path / "uninterrupted")
    run = tmp_path / "limited"
    monkeypatch.setattr(run_module, "TimeLimit", job_clock(end=90.0, tick=10.0))
    with pytest.raises(TimeLimitReached, match="stopped after epoch 3/4, checkpointed"):
        pretrain(config, run)
    assert load_torch(run / "checkpoint.pth")["epoch"] == 3 and not (run / "encoder.pth").exists()

    monkeypatch.setattr(run_module, "TimeLimit", job_clock(end=1e-3, tick=0.0))  # no time left for the recorded pace
    with pytest.raises(ConfigError, match="resources.pretrain.runtime: an epoch does not fit in this job"):
        pretrain(config, run)
    assert load_torch(run / "checkpoint.pth")["epoch"] == 3

    monkeypatch.setattr(run_module, "TimeLimit", job_clock(end=90.0, tick=10.0))
    pretrain(config, run)
    assert "resuming" in (run / "train.log").read_text() and (run / "encoder.pth").exists()
    assert_same_weights(model_state(tmp_path / "uninterrupted"), model_state(run))


def test_init_from_starts_training_from_the_encoder_weights(images, tmp_path, monkeypatch):
    """A fresh run from another run's encoder.pth: its first step starts from those encoder weights, and from
    the weights of a run without init_from elsewhere (decoder, densify); epochs and optimizer state are its own."""
    source = tmp_path / "source"
    pretrain(tiny(images, epochs=1, warmup_epochs=0), source)  # 4 steps move every encoder tensor
    monkeypatch.setattr(run_module, "train_step", run_module.train_step)  # restored after the test
    steps = record_train_steps()
    config = tiny(images, epochs=1, warmup_epochs=0)
    pretrain(config, tmp_path / "run", init_from=source / "encoder.pth")
    assert len(steps) == 4 and len(load_torch(tmp_path / "run" / "checkpoint.pth")["history"]) == 1
    start = steps[0]["weights"]
    encoder = {k.removeprefix("encoder."): v for k, v in start.items() if k.startswith("encoder.")}
    loaded = load_torch(source / "encoder.pth")
    assert_same_weights(encoder, {k: loaded[k] for k in encoder})
    seed_all(config.seed)
    fresh = dict(build_spark(config.model_config()).named_parameters())
    assert not any(torch.equal(fresh[f"encoder.{k}"], v) for k, v in encoder.items()), "init_from changed nothing"
    rest = start.keys() - {f"encoder.{k}" for k in encoder}
    assert rest
    assert_same_weights({k: start[k] for k in rest}, {k: fresh[k] for k in rest})
    assert json.loads((tmp_path / "run" / "run.json").read_text())["init"] == str(source / "encoder.pth")


def test_cli(images, tmp_path, capsys, monkeypatch):
    import eval.data.prepare

    prepared = []
    monkeypatch.setattr(eval.data.prepare, "prepare", lambda cfg: prepared.append(cfg) or [])
    (tmp_path / "p.yaml").write_text("data: {root: somewhere}\n")
    assert cli(["prepare", "--params", str(tmp_path / "p.yaml"), "data.seed=1"]) == 0  # the data section, overridden
    assert [(cfg.root, cfg.seed) for cfg in prepared] == [("somewhere", 1)]

    params = write_params(tmp_path / "params.yaml", tiny(images))
    assert cli(["pretrain", "--params", str(params), "--out", str(tmp_path / "bad"), "pretrain.mask_ratio=1.5"]) == 2
    assert "pretrain.mask_ratio: must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    with counting_reads(params) as reads:
        assert cli(["pretrain", "--params", str(params), "--out", str(tmp_path / "run"), "pretrain.epochs=2"]) == 0
    assert len(reads) == 1, reads  # the job reads its params once
    assert load_torch(tmp_path / "run" / "checkpoint.pth")["config"]["epochs"] == 2
    figure = tmp_path / "fig.png"
    pictures = sorted(images.rglob("*.png"))[:3]
    assert cli(["visualize", str(tmp_path / "run" / "checkpoint.pth"), *map(str, pictures), "--out", str(figure)]) == 0
    assert Image.open(figure).size == (4 * 66 + 2, 3 * 66 + 2)
    assert cli(["visualize", str(tmp_path / "run" / "encoder.pth"), str(pictures[0]), "--out", str(figure)]) == 2
    assert "records no config" in capsys.readouterr().err


@pytest.mark.slow
def test_pretraining_resnet18_lowers_the_masked_reconstruction_loss(tmp_path):
    data = write_images(tmp_path / "images", 256, seed=1)
    config = PretrainConfig(data=str(data), arch="resnet18", input_size=64, decoder_width=128, epochs=8,
                            warmup_epochs=1, global_batch=16, base_lr=0.4, num_workers=1, save_every=8,
                            vis_images=4, deterministic=True)
    pretrain(config, tmp_path / "run")  # 128 LAMB steps at peak lr 0.025 (LAMB's lr is a relative step size)
    losses = [record["loss"] for record in load_torch(tmp_path / "run" / "checkpoint.pth")["history"]]
    assert losses[0] > 0.9  # predicting nothing costs ~1 on per-patch normalised targets
    assert np.mean(losses[-3:]) < 0.75 * losses[0], losses
