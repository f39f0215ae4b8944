"""Put a timm-named encoder state_dict into a Detectron2 bottom-up backbone, and prove every weight landed.

Detectron2's ResNet names its modules differently from timm (``layer1.0.bn1`` is ``res2.0.conv1.norm``); the timm
wrapper keeps timm names. Either way the load is strict: a backbone parameter or buffer left at its random init
would silently turn a "pretrained" run into a from-scratch one, so any gap fails loudly, naming the keys.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from detectron2.modeling import Backbone
from detectron2.modeling.backbone.resnet import ResNet
from torch import nn

from eval.detection.backbone import TimmBackbone
from spark.errors import InputError

# Bookkeeping only: BN's update counter, absent from FrozenBN and irrelevant to the forward.
IGNORED_SUFFIX = "num_batches_tracked"


class BackboneWeightsError(InputError, RuntimeError):
    """The encoder state_dict does not cover the backbone exactly."""


def timm_resnet_to_detectron2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ResNet state_dict to Detectron2 ResNet names; the classifier ``fc.*`` is dropped.

    ``conv1``/``bn1`` → ``stem.conv1``/``stem.conv1.norm``, ``layerX`` → ``res(X+1)``, ``bnK`` → ``convK.norm``,
    ``downsample.0``/``.1`` → ``shortcut``/``shortcut.norm``. Keys of other layouts (deep stem, avg-down) come out
    unrenamed and are then reported by :func:`load_strict`.
    """
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("fc."):
            continue
        name = re.sub(r"^layer(\d)\.", lambda m: f"res{int(m[1]) + 1}.", key)
        if name.startswith(("conv1.", "bn1.")):
            name = "stem." + name
        name = name.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
        name = re.sub(r"(^|\.)bn(\d)\.", r"\1conv\2.norm.", name)
        converted[name] = value
    return converted


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """``load_state_dict`` that fails on any missing, unexpected or mis-shaped key (``num_batches_tracked`` aside)."""
    expected = {k: v for k, v in module.state_dict().items() if not k.endswith(IGNORED_SUFFIX)}
    given = {k: v for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIX)}
    problems = [f"missing: {k}" for k in expected if k not in given]
    problems += [f"unexpected: {k}" for k in given if k not in expected]
    problems += [
        f"shape: {k} is {tuple(v.shape)} in the checkpoint, {tuple(expected[k].shape)} in the backbone"
        for k, v in given.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise BackboneWeightsError(
            f"encoder weights do not match the {type(module).__name__} backbone "
            f"({len(problems)} problems):\n  {shown}{more}"
        )
    module.load_state_dict(state_dict, strict=False)


def load_encoder(bottom_up: Backbone, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a timm-named encoder into either bottom-up backbone, strictly.

    Top-level modules the feature extractor does not hold (a classifier, ConvNeXt's ``head``) are dropped; anything
    else that does not fit is an error.
    """
    if isinstance(bottom_up, ResNet):
        load_strict(bottom_up, timm_resnet_to_detectron2(state_dict))
    elif isinstance(bottom_up, TimmBackbone):
        model = bottom_up.body.model
        kept = {key.split(".", 1)[0] for key in model.state_dict()}
        load_strict(model, {k: v for k, v in state_dict.items() if k.split(".", 1)[0] in kept})
    else:
        raise TypeError(f"unsupported bottom-up backbone {type(bottom_up).__name__}")
