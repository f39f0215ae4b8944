"""The motivation measurements (zero-outing vs sparse encoding) on real numbers: the authors' fixed-weight demo by
hand, pixel and BatchNorm shifts on images, the mask's survival (and that a leaking sparse encoder breaks it), and
the stage end to end through the CLI into claim rows with verdicts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eval.arms import METHOD
from eval.cli import main as cli
from eval.motivation.batch_norm import batch_norm_shift
from eval.motivation.demo import fixed_weight_demo
from eval.motivation.encoders import encoder_pair
from eval.motivation.pixels import pixel_shift, wasserstein
from eval.motivation.run import FIGURES
from eval.motivation.survival import mask_survival, weighted_auroc
from eval.pipeline.dag import Branch
from eval.pipeline.stages import STAGES
from eval.tables import Run, display_claims, motivation_claims, motivation_table
from spark.model import SparKConfig
from spark.pretrain.data import list_images, load_images
from spark.sparse import VisibleMask
from helpers import write_images

REPO = Path(__file__).resolve().parents[1]
MODEL = SparKConfig(arch="resnet18", input_size=64, decoder_width=64)  # a 2x2 mask grid, 2 cells masked


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> torch.Tensor:
    folder = write_images(tmp_path_factory.mktemp("data") / "images", 12, size=64)
    return load_images(list_images(folder), 64)


def test_fixed_weight_demo_matches_the_hand_computation():
    one_hole = torch.ones(5, 5, dtype=torch.bool)
    one_hole[2, 2] = False
    demo = fixed_weight_demo(one_hole, layers=2)
    assert demo.maps["dense"][0][2, 2].item() == pytest.approx(8 / 9)  # its 8 visible neighbours fill it
    assert demo.zero_fraction == {"dense": [0.0, 0.0], "sparse": [1.0, 1.0]}
    assert demo.maps["sparse"][0][1, 1].item() == pytest.approx(8 / 9 * 1)  # corner of the hole: 8 ones, 1 zero
    square = torch.ones(7, 7, dtype=torch.bool)
    square[2:5, 2:5] = False  # a 3x3 hole: its centre sees only holes after one layer, a visible value after two
    demo = fixed_weight_demo(square, layers=2)
    assert demo.zero_fraction == {"dense": [1 / 9, 0.0], "sparse": [1.0, 1.0]}


def test_wasserstein_of_shifted_histograms_is_the_shift():
    edges = np.linspace(0, 10, 11)
    a, b = np.eye(10)[2], np.eye(10)[5]  # all mass in bin 2 vs bin 5
    assert wasserstein(a, b, edges) == pytest.approx(3.0) and wasserstein(a, a, edges) == 0.0


def test_auroc_counts_ties_as_half_and_reweights_positions():
    auroc = weighted_auroc(np.array([0.0, 0.0, 1.0, 2.0]), np.array([False, True, True, True]))
    assert auroc(np.ones(4)) == pytest.approx((0.5 + 1 + 1) / 3)
    assert auroc(np.array([1.0, 0.0, 1.0, 1.0])) == 1.0  # the tied positive left out


def test_zero_outing_shifts_pixels_and_batch_norm_statistics_more_than_sparse_encoding(images):
    pair = encoder_pair(MODEL, seed=0)
    visible = pair.sample_visible(len(images), seed=0)
    assert visible.float().mean().item() == pytest.approx(0.5)  # 2 of the 4 cells, as pretraining draws them
    pixels = pixel_shift(images, visible, resamples=200)
    assert pixels.zero_out > 0.2 and pixels.visible < 0.1 and pixels.difference.low > 0
    assert pixels.difference.verdict == "reproduced"
    stem = batch_norm_shift(pair, images, visible, layers=1, batch=6, resamples=200)[0]
    assert stem.layer == "bn1" and stem.zero_out > 10 * stem.sparse and stem.difference.low > 0
    # zero-outing spreads the input's variance over positions half of which are 0: its std shrinks by ~1/sqrt(2)
    shrink = stem.moments["zero_out"][1] / stem.moments["unmasked"][1]
    assert np.median(shrink) == pytest.approx(0.5**0.5, abs=0.1)


def test_the_mask_survives_sparse_encoding_at_every_scale_and_fades_when_dense(images):
    pair = encoder_pair(MODEL, seed=0)
    visible = pair.sample_visible(len(images), seed=0)
    scales = mask_survival(pair, images, visible, batch=6, resamples=200)
    assert [s.reduction for s in scales] == [4, 8, 16, 32]
    for scale in scales:
        assert scale.zero_fraction["sparse"] == 1.0 and scale.auroc["sparse"] == 1.0
        assert scale.zero_fraction["dense"] == 0.0
    assert min(s.auroc["dense"] for s in scales) < 0.95 and scales[-1].difference.verdict == "reproduced"


def test_a_sparse_encoder_that_leaks_fails_the_survival_measure(images, monkeypatch):
    """Masked outputs of convs and pools left as they are: the measure must see masked positions come alive."""
    monkeypatch.setattr(VisibleMask, "like", lambda self, x, channels_last=False: torch.ones_like(x[:1, :1]))
    pair = encoder_pair(MODEL, seed=0)
    scales = mask_survival(pair, images, pair.sample_visible(len(images), seed=0), batch=6, resamples=100)
    assert scales[0].zero_fraction["sparse"] < 0.95  # the stem's max-pool spills into the holes; layer1 keeps it


def test_the_stage_writes_metrics_that_the_report_turns_into_claims(tmp_path):
    data = write_images(tmp_path / "val", 8, size=64)
    params = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    params["motivation"] = {"data": str(data), "images": 8, "batch": 4, "bn_layers": 2, "bootstrap": 100}
    params["resources"]["motivation"] = {"threads": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "run"
    assert cli(["motivation", "--params", str(tmp_path / "params.yaml"), "--out", str(out), "--model", "resnet18",
                "--init", "scratch", "motivation.seed=0"]) == 0
    assert set(FIGURES.values()) <= set(STAGES["motivation"].outs)
    assert {p.name for p in out.iterdir()} >= {*STAGES["motivation"].outs, "metrics.json", "train.log"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["images"], metrics["input_size"], metrics["mask_ratio"]) == (8, 64, 0.6)
    assert list(metrics["encoders"]) == ["random_init"]  # from scratch: no pretrained encoder to measure
    run = Run("motivation", Branch("resnet18", METHOD, 0), out, metrics)
    claims = motivation_claims([run])
    assert len(claims) == 1 + 1 + 4  # pixels, the first BN, four scales
    assert list(claims["images"]) == [8] * 6 and set(claims["verdict"]) <= {"reproduced", "inconclusive"}
    assert claims["verdict"].iloc[0] == "reproduced"  # the pixel shift is large even on 8 images
    shown = display_claims(claims)
    assert shown["seeds (or images)"].iloc[0] == "8 images (bootstrap)"
    survival = metrics["encoders"]["random_init"]["mask_survival"][-1]["difference"]
    assert shown["this run: difference [95% interval]"].iloc[-1] == (
        f"{survival['estimate']:+.2f} AUROC sparse − dense [{survival['low']:+.2f}, {survival['high']:+.2f}]")
    table = motivation_table([run])
    assert len(table) == 1 + 2 + 4 * 2 and set(table["encoder"]) == {"—", "random_init"}
    metrics["encoders"]["random_init"]["bn_shift"] = []  # a LayerNorm encoder (ConvNeXt): no BN row, a note
    run = Run("motivation", Branch("convnext", METHOD, 0), out, metrics)
    assert len(motivation_claims([run])) == 1 + 4
    assert "BN input shift: no BatchNorm in this encoder" in set(motivation_table([run])["measure"])
