"""The ``motivation`` stage: measure one model's pretrained encoder (and a random initialisation of it, for
reference) on pretraining's inputs, and write ``metrics.json``, the figures, ``train.log`` and ``run.json``.

The measurements are pure functions (:mod:`.pixels`, :mod:`.batch_norm`, :mod:`.survival`, :mod:`.demo`); this
module reads the images, draws the masks and writes what they return.
"""
from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spark.config import to_dict
from spark.engine.records import log_to_file
from spark.io import write_json
from spark.model import SparKConfig
from spark.pretrain.data import list_images, load_images
from spark.provenance import recorded_run

from . import figures
from .batch_norm import BatchNormShift, batch_norm_shift
from .config import MotivationConfig
from .demo import fixed_weight_demo, patch_mask
from .encoders import EncoderPair, encoder_pair
from .pixels import pixel_shift
from .survival import ScaleSurvival, mask_survival

logger = logging.getLogger(__name__)

METRICS, LOG = "metrics.json", "train.log"
FIGURES = {"pixels": "pixel_histograms.png", "batch_norm": "bn_shift.png", "survival": "mask_survival.png",
           "demo": "fixed_weight_demo.png"}
PRETRAINED, RANDOM_INIT = "pretrained", "random_init"


def measurement_images(config: MotivationConfig, input_size: int) -> Tensor:
    """``config.images`` images of ``config.data`` drawn from ``config.seed``, ImageNet-normalised at the
    pretraining input size (resized and centre-cropped: the measurement's inputs are not augmented)."""
    paths = list_images(config.data, "motivation.data")
    chosen = torch.randperm(len(paths), generator=torch.Generator().manual_seed(config.seed))[: config.images]
    return load_images([paths[i] for i in sorted(chosen.tolist())], input_size)


def encoder_measurements(pair: EncoderPair, images: Tensor, visible: Tensor, config: MotivationConfig
                         ) -> tuple[list[BatchNormShift], list[ScaleSurvival]]:
    """The BatchNorm shift (none for an encoder without BatchNorm) and the mask survival of one encoder."""
    return (batch_norm_shift(pair, images, visible, config.bn_layers, config.batch, config.bootstrap, config.seed),
            mask_survival(pair, images, visible, config.batch, config.bootstrap, config.seed))


def encoder_record(shifts: list[BatchNormShift], scales: list[ScaleSurvival]) -> dict[str, Any]:
    """One encoder's numbers as ``metrics.json`` holds them."""
    return {
        "bn_shift": [{"layer": s.layer, "zero_out": s.zero_out, "sparse": s.sparse,
                      "difference": s.difference.to_dict()} for s in shifts],
        "mask_survival": [{"reduction": s.reduction, "zero_fraction": s.zero_fraction, "auroc": s.auroc,
                           "difference": s.difference.to_dict()} for s in scales],
    }


def motivation(config: MotivationConfig, model: SparKConfig, out: str | Path, weights: str | PathLike | None) -> None:
    """Measure ``model`` with ``weights`` (None: random initialisation only) into the run directory ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with log_to_file(logger, out / LOG), recorded_run(out, "motivation", to_dict(config), config.seed) as info:
        info["init"] = str(weights) if weights is not None else "random"
        images = measurement_images(config, model.input_size)
        encoders = {RANDOM_INIT: encoder_pair(model, None, config.seed)}
        if weights is not None:
            encoders = {PRETRAINED: encoder_pair(model, weights, config.seed), **encoders}
        visible = encoders[RANDOM_INIT].sample_visible(len(images), config.seed)
        logger.info("%s at %d px, mask ratio %g: %d images of %s, encoders %s", model.arch, model.input_size,
                    model.mask_ratio, len(images), config.data, ", ".join(encoders))
        pixels = pixel_shift(images, visible, config.bootstrap, config.seed)
        measured = {name: encoder_measurements(pair, images, visible, config) for name, pair in encoders.items()}
        demo = fixed_weight_demo(patch_mask(mask_ratio=model.mask_ratio, seed=config.seed))
        metrics = {
            "arch": model.arch, "input_size": model.input_size, "mask_ratio": model.mask_ratio, "images": len(images),
            "pixel_shift": {"zero_out": pixels.zero_out, "visible": pixels.visible,
                            "difference": pixels.difference.to_dict()},
            "encoders": {name: encoder_record(*m) for name, m in measured.items()},
            "fixed_weight_demo": demo.zero_fraction,
        }
        write_json(out / METRICS, metrics)
        shown_shifts, shown_scales = measured[next(iter(encoders))]  # the pretrained encoder's, if any
        figures.pixel_histograms(pixels, out / FIGURES["pixels"])
        figures.bn_shift(shown_shifts, out / FIGURES["batch_norm"])
        figures.mask_survival(shown_scales, out / FIGURES["survival"])
        figures.fixed_weight_demo(demo, out / FIGURES["demo"])
        logger.info("pixel shift, W1 zero-outed - visible: %s", pixels.difference)
        for name, (shifts, scales) in measured.items():
            for shift in shifts:
                logger.info("%s, %s input, KL zero-outed - sparse: %s", name, shift.layer, shift.difference)
            for scale in scales:
                logger.info("%s, scale 1/%d, AUROC sparse - dense: %s", name, scale.reduction, scale.difference)
