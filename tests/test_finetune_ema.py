"""The fine-tuning EMA: the decay the trainer applies at each step (with and without warm-up), what happens to the
BN buffers, and that a resumed run continues the same average.

The optimizer step is replaced by one that leaves every floating-point tensor of the model at ``t`` after step ``t``
(1-based over the run) and every integer buffer at ``10 t``, so the EMA of every tensor is one hand-computable
number sequence. Everything else (data loading, the step numbering, the EMA and its checkpoint) is the real trainer.
"""
import numpy as np
import pytest
import torch
from PIL import Image

import spark.engine.run as run_module
from eval.finetune import FinetuneConfig
from eval.finetune.trainer import Finetuner
from spark.engine import DistEnv, unwrap
from spark.engine.step import StepResult

pytestmark = pytest.mark.usefixtures("isolated_run")

ITERS = 4  # 32 training images, batches of 8

# timm's ModelEmaV3 warm-up, called as the trainer calls it (step = 1, 2, ... over the run): the first update copies
# the model (decay 0), then decay_t = 1 - t'^(-2/3) with t' = t (timm's get_decay: 1 + (step - 1)), capped at
# ema_decay = 0.7 (reached at step 7: 1 - 7^(-2/3) = 0.727).
WARMUP_DECAYS = [0.0, 1 - 2 ** (-2 / 3), 1 - 3 ** (-2 / 3), 1 - 4 ** (-2 / 3), 1 - 5 ** (-2 / 3), 1 - 6 ** (-2 / 3),
                 0.7, 0.7]
# e_t = d_t e_(t-1) + (1 - d_t) t, by hand from the decays above (0, 0.370039, 0.519250, 0.603150, 0.658005,
# 0.697147, 0.7, 0.7): the EMA after each of the 8 steps of a 2-epoch run.
WARMUP_EMA = [1.0, 1.629961, 2.288607, 2.967774, 3.662785, 4.370619, 5.159433, 6.011603]


def write_images(root, per_class=8, size=32):
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for label, colour in enumerate([(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 220, 40)]):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def config(data, **changes):
    return FinetuneConfig.parse({"finetune": {
        "data": str(data), "arch": "test_resnet", "recipe": "resnet50", "input_size": 32, "global_batch": 8,
        "epochs": 2, "warmup_epochs": 1, "base_lr": 0.05, "mixup": 0.0, "augment": "none", "erase_prob": 0.0,
        "drop_path_rate": 0.0, "ema_decay": 0.7, "ema_warmup": True, "num_workers": 0, **changes}})


class SetWeights:
    """Stands in for ``train_step``: step t leaves the model's float tensors at t and its integer buffers at 10 t,
    and records the EMA as the previous step's update left it."""

    def __init__(self, first_step=1, record=True):
        self.t, self.record = first_step, record
        self.trainer = None
        self.ema_seen = []

    def __call__(self, loss_fn, optimizer, batch, *, module, **kwargs):
        if self.record and self.t > 1:
            self.ema_seen.append(ema_value(self.trainer))
        with torch.no_grad():
            for v in unwrap(module).state_dict().values():
                v.fill_(self.t if v.is_floating_point() else 10 * self.t)
        self.t += 1
        return StepResult(loss=0.0, grad_norm=0.0)


def ema_value(trainer):
    """The one value all float tensors of the EMA share (asserting they do)."""
    values = torch.cat([v.flatten() for v in trainer.ema.module.state_dict().values() if v.is_floating_point()])
    assert (values.max() - values.min()).item() < 1e-5
    return values[0].item()


def start(cfg, run_dir, monkeypatch, first_step=1, record=True):
    step = SetWeights(first_step, record)
    monkeypatch.setattr(run_module, "train_step", step)
    trainer = Finetuner(cfg, run_dir, DistEnv(), "scratch")
    step.trainer = trainer
    return trainer, step


def test_ema_warmup_decay_at_every_step_and_bn_buffers(tmp_path, monkeypatch):
    trainer, step = start(config(write_images(tmp_path / "data")), tmp_path / "run", monkeypatch)
    assert trainer.iters == ITERS and trainer.ema.decay == 0.7 and trainer.ema.use_warmup
    trainer.train_epoch(1)
    trainer.train_epoch(2)
    seen = step.ema_seen + [ema_value(trainer)]
    assert seen == pytest.approx(WARMUP_EMA, abs=1e-5)
    # the same numbers from the decays (guards the hand-computed table)
    expected = None
    for t, decay in enumerate(WARMUP_DECAYS, start=1):
        expected = t if expected is None else decay * expected + (1 - decay) * t
    assert expected == pytest.approx(WARMUP_EMA[-1], abs=1e-6)

    # BN buffers: running statistics are averaged like the weights, the batch counter is the model's latest
    ema_state = trainer.ema.module.state_dict()
    running = [k for k in ema_state if k.endswith(("running_mean", "running_var"))]
    counters = [k for k in ema_state if k.endswith("num_batches_tracked")]
    assert running and counters
    for k in running:
        assert torch.allclose(ema_state[k], torch.full_like(ema_state[k], WARMUP_EMA[-1]), atol=1e-5), k
    for k in counters:
        assert ema_state[k].dtype == torch.long and ema_state[k].item() == 80, k
    # the model itself is at step 8's values: the EMA lags it
    model_state = unwrap(trainer.model).state_dict()
    assert all(torch.all(model_state[k] == 8) for k in running)


def test_ema_without_warmup_averages_in_the_initial_weights(tmp_path, monkeypatch):
    trainer, _ = start(config(write_images(tmp_path / "data"), ema_warmup=False, ema_decay=0.5),
                       tmp_path / "run", monkeypatch, record=False)
    initial = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
    trainer.train_epoch(1)
    # decay 0.5 from the first update: e_4 = 0.5^4 e_0 + 0.5 (4 + 3/2 + 2/4 + 1/8) = 0.0625 e_0 + 3.0625
    for k, v in trainer.ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.0625 * initial[k] + 3.0625, atol=1e-5, rtol=0, msg=k)
        else:
            assert v.item() == 40, k


def test_a_resumed_run_continues_the_ema(tmp_path, monkeypatch):
    cfg = config(write_images(tmp_path / "data"))
    trainer, _ = start(cfg, tmp_path / "run", monkeypatch)
    trainer.history.append(trainer.train_epoch(1))
    trainer.save(1)
    saved_ema = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}

    resumed, _ = start(cfg, tmp_path / "run", monkeypatch, first_step=ITERS + 1)
    assert resumed.start_epoch == 1
    resumed_ema = resumed.ema.module.state_dict()
    assert resumed_ema.keys() == saved_ema.keys()
    assert all(torch.equal(resumed_ema[k], v) for k, v in saved_ema.items())
    assert ema_value(resumed) == pytest.approx(WARMUP_EMA[ITERS - 1], abs=1e-5)  # not the model's 4.0
    assert unwrap(resumed.model).state_dict()["conv1.0.weight"].flatten()[0].item() == ITERS

    resumed.train_epoch(2)  # steps 5..8 must keep warming up from step 5, not restart at step 1
    assert ema_value(resumed) == pytest.approx(WARMUP_EMA[-1], abs=1e-5)
    continued = SetWeights(ITERS + 1)
    continued.trainer = trainer
    monkeypatch.setattr(run_module, "train_step", continued)
    trainer.train_epoch(2)  # the uninterrupted run
    uninterrupted = trainer.ema.module.state_dict()
    assert all(torch.equal(uninterrupted[k], v) for k, v in resumed.ema.module.state_dict().items())
