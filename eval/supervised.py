"""Where the supervised arm's weights come from (``detection.supervised_weights``, per model).

The paper puts SparK's COCO transfer beside *supervised ImageNet pretraining* (R50-FPN 1x: 41.6 vs 38.9 AP^bb), not
beside random init, so detection runs a ``supervised`` arm whose backbone starts from a supervised classifier:

- ``own``: this DAG's own supervised classifier, the fine-tuning from scratch with all labels (``pretrain_seed``),
  whose trunk every fine-tuning run exports; offline everywhere, and what the mini preset uses;
- ``torchvision:<weights>``: a published torchvision classifier from torch's hub cache, e.g.
  ``torchvision:ResNet50_Weights.IMAGENET1K_V1``;
- ``timm:<model>.<tag>``: a published timm classifier from the Hugging Face cache, e.g. ``timm:convnext_base.fb_in1k``;
- any other value: a path to a state-dict file (``.pth`` or ``.safetensors``).

Nothing is downloaded at run time: a published file missing from the local cache is an :class:`InputError` that
says the one command fetching it; ``prepare``, the first job of every run, checks every source up front
(:mod:`eval.pipeline.stages`).
"""
from __future__ import annotations

from pathlib import Path

from spark.errors import InputError

OWN = "own"
PUBLISHED = ("torchvision:", "timm:")


class MissingWeightsError(InputError):
    """A supervised arm's weights are not on this machine (and the run never downloads)."""


def check_source(source: str) -> str | None:
    """Why ``source`` cannot name supervised weights (None if it can): the syntax only, offline and instant."""
    if not isinstance(source, str) or not source:
        return f"expected '{OWN}', 'torchvision:<weights>', 'timm:<model>.<tag>' or a file path, got {source!r}"
    prefix, _, name = source.partition(":")
    if f"{prefix}:" in PUBLISHED and not name:
        return f"{source!r} names no weights (e.g. torchvision:ResNet50_Weights.IMAGENET1K_V1, timm:convnext_base.fb_in1k)"
    return None


def weights_file(source: str, own: str | Path) -> Path:
    """The local file of ``source``; ``own`` is this DAG's supervised classifier's exported trunk. Raises
    :class:`MissingWeightsError` for a published file not in the local cache, with the command that fetches it."""
    if source == OWN:
        return Path(own)
    if source.startswith("torchvision:"):
        path, fetch = _torchvision(source.removeprefix("torchvision:"))
    elif source.startswith("timm:"):
        path, fetch = _timm(source.removeprefix("timm:"))
    else:
        path, fetch = Path(source), None
    if path is not None and path.is_file():
        return path
    if fetch is None:
        raise MissingWeightsError(f"supervised weights {source}: no such file")
    raise MissingWeightsError(f"supervised weights {source}: not in the local cache ({path or 'Hugging Face hub'}); "
                              f"fetch them once on a machine with network: {fetch}")


def _torchvision(name: str) -> tuple[Path, str]:
    import torch
    import torchvision

    try:
        weights = torchvision.models.get_weight(name)
    except (ValueError, KeyError, AttributeError) as err:
        raise MissingWeightsError(f"supervised weights torchvision:{name}: not a torchvision weights name ({err})") \
            from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    return path, f"python -c \"import torchvision; torchvision.models.get_weight('{name}').get_state_dict()\""


def _timm(name: str) -> tuple[Path | None, str]:
    import huggingface_hub
    import timm

    try:
        repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    except (RuntimeError, AttributeError) as err:
        raise MissingWeightsError(f"supervised weights timm:{name}: not a timm pretrained tag ({err})") from None
    cached = huggingface_hub.try_to_load_from_cache(repo, "model.safetensors")
    path = Path(cached) if isinstance(cached, str) else None
    return path, f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""

