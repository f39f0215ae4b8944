"""Submanifold sparse convolution, simulated densely on an unmodified convnet.

SparK encodes a masked image with the ordinary network whose every conv/pool/norm output is zeroed at masked
positions and whose normalisation statistics use visible positions only: a submanifold sparse convnet run on the
visible patches, in dense tensors. :func:`sparsify` obtains it by converting layers in place, the way
``torch.nn.utils.parametrize`` does: each matching module becomes an instance of a subclass of its own class
(``Conv2d`` -> ``SparseConv2d``) that adds the masking around the parent's ``forward``. Weights, buffers and
parameter names are untouched, so the state_dict is still a plain timm state_dict, and any subclass (timm's
``Conv2dSame``, ``BatchNormAct2d``, ``LayerNorm2d`` ...) keeps its own behaviour.

The visible cells are not global state: every converted layer holds the same :class:`ActiveMask`, which the owner
sets for the duration of one forward call (``with active_mask.use(active): ...``).
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator

import timm.layers
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from timm.layers.cbam import CbamModule, LightCbamModule
from timm.layers.squeeze_excite import EffectiveSEModule, SEModule
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import Tensor, nn

from .masking import upsample_active


class ActiveMask:
    """The visible cells of the current batch, shared by all sparse layers of one model.

    Finer resolutions are the coarse mask repeated; they are computed once per resolution and call.
    """

    def __init__(self) -> None:
        self._active: Tensor | None = None
        self._cache: dict[tuple, Tensor] = {}

    @contextmanager
    def use(self, active: Tensor) -> Iterator[None]:
        """Make ``active`` (bool, (B, 1, h, w), True = visible) the mask for the layers run inside the block."""
        if active.dtype != torch.bool or active.dim() != 4 or active.shape[1] != 1:
            raise ValueError(f"active must be a bool tensor of shape (B, 1, h, w), got {active.dtype} {tuple(active.shape)}")
        previous = self._active, self._cache
        self._active, self._cache = active, {}
        try:
            yield
        finally:
            self._active, self._cache = previous

    def at(self, size: tuple[int, int]) -> Tensor:
        """The bool mask (B, 1, H, W) at a feature resolution."""
        if self._active is None:
            raise RuntimeError("a sparse layer ran without a mask: call it inside ActiveMask.use(active)")
        key = ("bool", *size)
        if key not in self._cache:
            self._cache[key] = upsample_active(self._active, size)
        return self._cache[key]

    def like(self, x: Tensor, channels_last: bool = False) -> Tensor:
        """A 0/1 mask in ``x``'s dtype that broadcasts against ``x`` (NCHW, or NHWC if ``channels_last``)."""
        size = tuple(x.shape[1:3] if channels_last else x.shape[-2:])
        key = (x.dtype, channels_last, *size)
        if key not in self._cache:
            mask = self.at(size).to(x.dtype)
            self._cache[key] = mask.permute(0, 2, 3, 1) if channels_last else mask
        return self._cache[key]


class SparseLayer:
    """Mixin marking a converted layer; ``active_mask`` is set by :func:`sparsify`."""

    active_mask: ActiveMask


class MaskedOutput(SparseLayer):
    """Zero the output at masked positions (NCHW): convolutions, pooling, channels-first LayerNorm."""

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out * self.active_mask.like(out)


class MaskedChannelsLastOutput(SparseLayer):
    """Zero the output at masked positions of NHWC maps: LayerNorm and Linear (1x1 conv) in ConvNeXt blocks.

    Masking the block's last Linear is what keeps the residual branch zero at masked positions before it is
    added to the shortcut (its bias would otherwise leak into masked positions).
    """

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out * self.active_mask.like(out, channels_last=True) if out.dim() == 4 else out


class MaskedBatchNorm(SparseLayer):
    """BatchNorm whose statistics (and running statistics) cover visible positions only.

    Equal to gathering the visible (B, H, W) sites into an (N, C) matrix, applying BatchNorm1d and scattering
    back into zeros, but computed from masked moments: no data-dependent shapes and no host-device sync. The
    moments are taken about a per-channel shift near the mean, which keeps them as accurate as the gathered
    BatchNorm's in fp32. With ``sync`` set (see :func:`convert_sync_batchnorm`) the moments of all processes
    are gathered and merged exactly, as torch's SyncBatchNorm does.
    """

    sync: bool = False

    def forward(self, x: Tensor) -> Tensor:
        return self.normalize(x)

    def normalize(self, x: Tensor) -> Tensor:
        mask = self.active_mask.like(x)
        if self.training or self.running_mean is None:
            mean, var = self._visible_moments(x, mask)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        out = torch.addcmul(shift[:, None, None].to(x.dtype), x, scale[:, None, None].to(x.dtype))
        return out * mask

    def _visible_moments(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and biased variance over visible sites (in at least fp32); updates running stats in training.

        One pass over ``x`` for both moments, which keeps the masked BN close to the cost of the fused dense one:
        the sum and sum of squares of ``d = x - shift``, ``shift`` a constant near the mean (:func:`_mean_estimate`).
        The relative rounding error of var = E[d^2] - E[d]^2 then grows as 1 + (mean - shift)^2 / var instead of
        1 + mean^2 / var. The shift changes the rounding only, not the result nor its gradient.
        """
        dtype = torch.promote_types(x.dtype, torch.float32)
        shift = _mean_estimate(x, mask, dtype)
        centered = (x - shift[:, None, None]).mul_(mask)
        count = mask.sum(dtype=dtype)
        total = centered.sum((0, 2, 3))
        offset = total / count.clamp_min(1)
        mean = shift + offset
        deviations = (centered.square().sum((0, 2, 3)) - total * offset).clamp_min(0)
        if self.sync and dist.is_available() and dist.is_initialized():
            moments = torch.cat([count.reshape(1), mean, deviations])
            count, mean, deviations = _merge_moments(dist_fn.all_gather(moments))
        var = deviations / count.clamp_min(1)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, deviations / (count - 1).clamp_min(1))
        return mean, var

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


@torch.no_grad()
def _mean_estimate(x: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A per-channel value near the visible mean at the cost of 1/B of a pass: the first image's visible mean.

    0 if that image has no visible site, which only leaves the moments unshifted.
    """
    first = mask[:1]
    return (x[:1] * first).sum((0, 2, 3), dtype=dtype) / first.sum(dtype=dtype).clamp_min(1)


def _merge_moments(parts: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Count, mean and sum of squared deviations of a union from each part's ``cat([count, mean, deviations])``.

    Chan et al.'s parallel formula: the parts' moments have different shifts, so their sums cannot be added.
    """
    channels = (parts[0].numel() - 1) // 2
    counts, means, deviations = torch.stack(parts).split([1, channels, channels], dim=1)
    count = counts.sum()
    mean = (counts * means).sum(0) / count.clamp_min(1)
    return count, mean, deviations.sum(0) + (counts * (means - mean).square()).sum(0)


class MaskedBatchNormAct(MaskedBatchNorm):
    """timm's ``BatchNormAct2d`` (BN, dropout, activation) with masked statistics; f(0)=0 activations keep zeros."""

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(self.normalize(x)))


class VisibleMeanExcite(SparseLayer):
    """Squeeze-excitation (``x * gate(f(mean(x)))``) whose global mean covers visible positions only.

    Scaling the input by H*W / #visible turns the module's spatial mean into the visible mean; the output is
    scaled back. This holds for every module of that form, so the module's own forward is reused unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:
        mask = self.active_mask.like(x)
        scale = mask[0, 0].numel() / mask.sum((2, 3), keepdim=True).clamp_min(1)
        return super().forward(x * scale) / scale


# Ordered: the first matching base wins. Global-context modules are converted whole (their 1x1 convs act on
# pooled vectors and must stay dense).
_CONVERSIONS: tuple[tuple[tuple[type, ...], type], ...] = (
    ((SEModule, EffectiveSEModule, timm.layers.EcaModule, SqueezeExcite), VisibleMeanExcite),
    ((timm.layers.BatchNormAct2d,), MaskedBatchNormAct),
    ((nn.BatchNorm2d,), MaskedBatchNorm),
    ((nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, timm.layers.LayerNorm2d), MaskedOutput),
    ((nn.LayerNorm, nn.Linear), MaskedChannelsLastOutput),
)
# Layers whose statistics span masked positions and that have no sparse form here: refuse rather than leak.
_UNSUPPORTED = (
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.SyncBatchNorm,
    timm.layers.GatherExcite,
    timm.layers.GlobalContext,
    CbamModule,
    LightCbamModule,
)


@functools.cache
def _sparse_class(mixin: type, dense: type) -> type:
    return type(f"Sparse{dense.__name__}", (mixin, dense), {"__doc__": mixin.__doc__})


def sparsify(module: nn.Module, active_mask: ActiveMask) -> nn.Module:
    """Convert ``module`` and its descendants in place to their sparse versions, sharing ``active_mask``.

    Returns ``module``. Raises ``TypeError`` for a layer whose statistics would span masked positions.
    """
    if isinstance(module, SparseLayer):
        module.active_mask = active_mask
        return module
    if isinstance(module, _UNSUPPORTED):
        raise TypeError(f"{type(module).__name__} has no sparse version: its statistics would include masked positions")
    for bases, mixin in _CONVERSIONS:
        if isinstance(module, bases):
            module.__class__ = _sparse_class(mixin, type(module))
            module.active_mask = active_mask
            return module
    for child in module.children():
        sparsify(child, active_mask)
    return module


def convert_sync_batchnorm(module: nn.Module, dense: bool = True) -> nn.Module:
    """Prepare a model for DDP: masked BNs synchronise their moments, other BNs become SyncBatchNorm.

    Use this instead of torch's converter, which would replace the masked BNs by ordinary ones (letting masked
    positions into the statistics) and drop the activation of timm's fused norm-act layers; the dense BNs go
    through timm's. Masked BNs synchronise over any backend (gloo too); ``dense=False`` leaves the other BNs
    per-process, for devices torch's SyncBatchNorm does not support.
    """
    if isinstance(module, MaskedBatchNorm):
        module.sync = True
        return module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return timm.layers.convert_sync_batchnorm(module) if dense else module
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child, dense)
        if converted is not child:
            setattr(module, name, converted)
    return module
