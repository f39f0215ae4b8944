"""Load SparK and encoder weights from every layout users have: ours and the authors' released checkpoints.

Layouts (after unwrapping ``model`` / ``module`` / ``state_dict`` nesting and DDP ``module.`` prefixes):

- ``spark``: our full model (``encoder.*``, ``densify.*``, ``decoder.*``);
- ``authors-spark``: the authors' pretraining checkpoints with decoder (``sparse_encoder.sp_cnn.*``,
  ``dense_decoder.*``, ``densify_norms.*``, ``densify_projs.*``, ``mask_tokens.*``);
- ``timm``: encoder-only weights in plain timm naming (our ``encoder.pth``, the authors' ``*_timm_style.pth``).

Everything is read with ``weights_only=True``; a file that is not a state dict, or does not fit the model, is
rejected with a message that says why.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from torch import Tensor, nn

from .encoder import head_keys
from .errors import InputError
from .io import UnreadableFileError, load_torch
from .model import SparK

_AUTHORS_TO_OURS = (
    (re.compile(r"^sparse_encoder\.sp_cnn\."), "encoder."),
    (re.compile(r"^dense_decoder\.dec\."), "decoder.blocks."),
    (re.compile(r"^dense_decoder\.proj\."), "decoder.head."),
    (re.compile(r"^densify_norms\.(\d+)\."), r"densify.\1.norm."),
    (re.compile(r"^densify_projs\.(\d+)\."), r"densify.\1.proj."),
    (re.compile(r"^mask_tokens\.(\d+)$"), r"densify.\1.mask_token"),
)
_AUTHORS_UNUSED = ("imn_m", "imn_s", "norm_black")
_WRAPPERS = ("model", "module", "state_dict")


class CheckpointError(InputError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class LoadReport:
    """What a load did: the layout found, target keys left as initialised, checkpoint keys not used."""

    layout: str
    missing: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def read_state_dict(source: str | PathLike | Mapping[str, Any]) -> dict[str, Tensor]:
    """The flat tensor mapping inside a checkpoint file or object."""
    name = str(source) if isinstance(source, (str, PathLike)) else "checkpoint"
    try:
        obj = load_torch(source) if isinstance(source, (str, PathLike)) else source
    except UnreadableFileError as err:
        raise CheckpointError(str(err)) from None
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping):  # the authors' state_dict(with_config=True)
        obj = {k: v for k, v in obj.items() if k != "config"}
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{name}: not a state dict (expected a mapping of tensors, possibly under 'model')")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def checkpoint_layout(state: Mapping[str, Tensor]) -> str:
    """``spark``, ``authors-spark`` or ``timm`` (see the module docstring)."""
    if any(k.startswith("sparse_encoder.") for k in state):
        return "authors-spark"
    if any(k.startswith("encoder.") for k in state) and any(k.startswith("decoder.") for k in state):
        return "spark"
    return "timm"


def to_our_naming(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an ``authors-spark`` state dict to our module names, dropping their unused buffers."""
    out = {}
    for key, value in state.items():
        if key in _AUTHORS_UNUSED:
            continue
        for pattern, replacement in _AUTHORS_TO_OURS:
            key, n = pattern.subn(replacement, key)
            if n:
                break
        out[key] = value
    return out


def read_encoder_state_dict(source: str | PathLike | Mapping[str, Any]) -> dict[str, Tensor]:
    """Encoder weights in plain timm naming from any supported layout (what fine-tuning and detection load)."""
    state = read_state_dict(source)
    layout = checkpoint_layout(state)
    if layout == "timm":
        return state
    state = to_our_naming(state) if layout == "authors-spark" else state
    return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}


def load_checkpoint(model: nn.Module, source: str | PathLike | Mapping[str, Any]) -> LoadReport:
    """Load ``source`` into a :class:`SparK` (full or encoder-only checkpoints) or into a plain timm model.

    A plain timm model receives the encoder weights; only its classifier head may stay as initialised.
    """
    state = read_state_dict(source)
    layout = checkpoint_layout(state)
    if isinstance(model, SparK) and layout != "timm":
        state = to_our_naming(state) if layout == "authors-spark" else state
        encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        rest = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        report = _load_encoder(model.encoder, model.config.arch, encoder, layout)
        _load_strict(model, rest, exclude_prefix="encoder.")
        return report
    encoder = read_encoder_state_dict(state)
    target = model.encoder if isinstance(model, SparK) else model
    arch = model.config.arch if isinstance(model, SparK) else _timm_arch(model)
    return _load_encoder(target, arch, encoder, layout)


def _load_encoder(target: nn.Module, arch: str, state: dict[str, Tensor], layout: str) -> LoadReport:
    """Load trunk weights into ``target``; only the classifier head may be missing or left unused."""
    expected = target.state_dict()
    if set(state) - set(expected):
        try:
            state = _timm_filter(target, state)
        except (KeyError, RuntimeError) as err:  # the converter indexes and reshapes by the target's keys
            raise CheckpointError(f"checkpoint does not fit '{arch}': timm's converter failed on it "
                                  f"({type(err).__name__}: {err}) (wrong architecture?)") from None
    head = head_keys(arch)
    ignored = sorted(k for k in state if k in head or k not in expected)
    unexpected = [k for k in ignored if k not in head]
    state = {k: v for k, v in state.items() if k in expected and k not in head}
    missing = sorted(set(expected) - set(state))
    bad_missing = [k for k in missing if k not in head]
    if unexpected or bad_missing:
        raise CheckpointError(
            f"checkpoint does not fit '{arch}': {len(bad_missing)} missing keys {bad_missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]} (wrong architecture?)"
        )
    _copy_checked(target, state, arch)
    return LoadReport(layout, missing, ignored)


def _load_strict(model: SparK, state: dict[str, Tensor], exclude_prefix: str) -> None:
    expected = {k for k in model.state_dict() if not k.startswith(exclude_prefix)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"SparK checkpoint does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(different decoder width/depth, hierarchy or densify norm?)"
        )
    _copy_checked(model, state, model.config.arch)


def _copy_checked(model: nn.Module, state: dict[str, Tensor], arch: str) -> None:
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint tensors do not fit '{arch}': {str(err).splitlines()[-1].strip()}") from None


def _timm_filter(target: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm's own converter for this architecture (e.g. official ConvNeXt names -> timm), when it has one."""
    convert = getattr(sys.modules[type(target).__module__], "checkpoint_filter_fn", None)
    return convert(state, target) if convert else state


def _timm_arch(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "architecture" not in cfg:
        raise CheckpointError("load_checkpoint needs a SparK or a timm model (one with pretrained_cfg['architecture'])")
    return cfg["architecture"]
