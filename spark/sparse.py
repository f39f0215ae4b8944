"""Submanifold sparse convolution, simulated densely on an unmodified convnet.

SparK encodes a masked image with the ordinary network whose every conv/pool/norm output is zeroed at masked
positions and whose normalisation statistics use visible positions only: a submanifold sparse convnet run on the
visible patches, in dense tensors. :func:`sparsify` obtains it by converting layers in place, the way
``torch.nn.utils.parametrize`` does: each matching module becomes an instance of a subclass of its own class
(``Conv2d`` -> ``SparseConv2d``) that adds the masking around the parent's ``forward``. Weights, buffers and
parameter names are untouched, so the state_dict is still a plain timm state_dict, and any subclass (timm's
``Conv2dSame``, ``BatchNormAct2d``, ``LayerNorm2d`` ...) keeps its own behaviour.

The visible cells are not global state: every converted layer holds the same :class:`VisibleMask`, which the owner
sets for the duration of one forward call (``with visible_mask.use(visible): ...``).

Masking costs a pass over a map, so it is done only where needed: a conv or pool whose output goes only into
norms that ignore masked positions (a conv feeding a BN, found on the network's torch.fx graph) skips it. On the
same graph, a ReLU that is the only reader of a BN's output is applied by the masked BN in its own pass.
"""
from __future__ import annotations

import collections
import functools
import logging
from contextlib import contextmanager
from typing import Iterator

import timm.layers
import torch
import torch.distributed as dist
import torch.fx
from timm.layers.cbam import CbamModule, LightCbamModule
from timm.layers.squeeze_excite import EffectiveSEModule, SEModule
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import Tensor, nn

from .masked_bn import masked_batch_norm
from .masking import upsample_visible

logger = logging.getLogger(__name__)


class VisibleMask:
    """The visible cells of the current batch, shared by all sparse layers of one model.

    Finer resolutions are the coarse mask repeated; they are computed once per resolution and call.
    """

    def __init__(self) -> None:
        self._visible: Tensor | None = None
        self._cache: dict[tuple, Tensor] = {}

    @contextmanager
    def use(self, visible: Tensor) -> Iterator[None]:
        """Make ``visible`` (bool, (B, 1, h, w), True = visible) the mask for the layers run inside the block."""
        if visible.dtype != torch.bool or visible.dim() != 4 or visible.shape[1] != 1:
            raise ValueError(f"visible must be a bool tensor of shape (B, 1, h, w), got {visible.dtype} {tuple(visible.shape)}")
        previous = self._visible, self._cache
        self._visible, self._cache = visible, {}
        try:
            yield
        finally:
            self._visible, self._cache = previous

    def at(self, size: tuple[int, int]) -> Tensor:
        """The bool mask (B, 1, H, W) at a feature resolution."""
        if self._visible is None:
            raise RuntimeError("a sparse layer ran without a mask: call it inside VisibleMask.use(visible)")
        key = ("bool", *size)
        if key not in self._cache:
            self._cache[key] = upsample_visible(self._visible, size)
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
    """Mixin marking a converted layer; ``visible_mask`` is set by :func:`sparsify`."""

    visible_mask: VisibleMask


class MaskedOutput(SparseLayer):
    """Zero the output at masked positions (NCHW): convolutions, pooling, channels-first LayerNorm.

    ``masks_output`` is cleared by :func:`sparsify` where every consumer of the output is a norm that ignores
    masked positions and zeroes them itself (a conv feeding a BN): masking there would be a wasted pass.
    """

    masks_output: bool = True

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out * self.visible_mask.like(out) if self.masks_output else out


class MaskedChannelsLastOutput(SparseLayer):
    """Zero the output at masked positions of NHWC maps: LayerNorm and Linear (1x1 conv) in ConvNeXt blocks.

    Masking the block's last Linear is what keeps the residual branch zero at masked positions before it is
    added to the shortcut (its bias would otherwise leak into masked positions).
    """

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out * self.visible_mask.like(out, channels_last=True) if out.dim() == 4 else out


class MaskedBatchNorm(SparseLayer):
    """BatchNorm whose statistics (and running statistics) cover visible positions only (see :mod:`.masked_bn`).

    With ``sync`` set (see :func:`convert_sync_batchnorm`) the moments of all processes are gathered and merged
    exactly, as torch's SyncBatchNorm does. With ``applies_relu`` set by :func:`sparsify` it also applies the ReLU
    that alone consumes its output (that ReLU becoming a :class:`ReluInNorm`), saving that pass and its gradient's.
    """

    sync: bool = False
    applies_relu: bool = False

    def forward(self, x: Tensor) -> Tensor:
        return self.normalize(x, relu=self.applies_relu)

    def normalize(self, x: Tensor, relu: bool = False) -> Tensor:
        """Arguments chosen as torch's ``_BatchNorm.forward`` chooses them for ``F.batch_norm``."""
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        keep_running = not self.training or self.track_running_stats
        return masked_batch_norm(
            x, self.visible_mask.at(x.shape[-2:]), self.weight, self.bias,
            self.running_mean if keep_running else None, self.running_var if keep_running else None,
            training=self.training or self.running_mean is None, momentum=momentum, eps=self.eps,
            sync=self.sync and dist.is_available() and dist.is_initialized(), relu=relu)


class MaskedBatchNormAct(MaskedBatchNorm):
    """timm's ``BatchNormAct2d`` (BN, dropout, activation) with masked statistics; f(0)=0 activations keep zeros.
    A plain ReLU without dropout is applied by the norm itself."""

    def forward(self, x: Tensor) -> Tensor:
        if type(self.act) is nn.ReLU and isinstance(self.drop, nn.Identity):
            return self.normalize(x, relu=True)
        return self.act(self.drop(self.normalize(x)))


class ReluInNorm(SparseLayer):
    """A ReLU that the masked BatchNorm before it already applied: the identity."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class VisibleMeanExcite(SparseLayer):
    """Squeeze-excitation (``x * gate(f(mean(x)))``) whose global mean covers visible positions only.

    Scaling the input by H*W / #visible turns the module's spatial mean into the visible mean; the output is
    scaled back. This holds for every module of that form, so the module's own forward is reused unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:
        mask = self.visible_mask.like(x)
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


def sparsify(module: nn.Module, visible_mask: VisibleMask) -> nn.Module:
    """Convert ``module`` and its descendants in place to their sparse versions, sharing ``visible_mask``.

    Returns ``module``. Raises ``TypeError`` for a layer whose statistics would span masked positions.
    """
    graph = _traced(module)
    normalized, relus = (_outputs_only_normalized(graph), _relus_after_batch_norms(graph)) if graph else ([], [])
    _convert(module, visible_mask)
    for layer in normalized:
        layer.masks_output = False
    for norm, relu in relus:
        norm.applies_relu = True
        relu.__class__ = _sparse_class(ReluInNorm, type(relu))
        relu.visible_mask = visible_mask
    return module


def _convert(module: nn.Module, visible_mask: VisibleMask) -> None:
    if isinstance(module, SparseLayer):
        module.visible_mask = visible_mask
        return
    if isinstance(module, _UNSUPPORTED):
        raise TypeError(f"{type(module).__name__} has no sparse version: its statistics would include masked positions")
    for bases, mixin in _CONVERSIONS:
        if isinstance(module, bases):
            module.__class__ = _sparse_class(mixin, type(module))
            module.visible_mask = visible_mask
            return
    for child in module.children():
        _convert(child, visible_mask)


# Layers that become MaskedOutput, and the norms that make their masking redundant: masked BNs leave masked
# positions out of their statistics and zero them in their output; LayerNorm2d normalises each position alone
# and zeroes masked ones.
_MASKED_OUTPUT_BASES = next(bases for bases, mixin in _CONVERSIONS if mixin is MaskedOutput)
_ABSORBING_NORMS = (nn.BatchNorm2d, timm.layers.LayerNorm2d)


_CONVERTED_BASES = tuple(base for bases, _ in _CONVERSIONS for base in bases)


class _LayerTracer(torch.fx.Tracer):
    """Traces a network down to the layers :func:`sparsify` converts, which stay calls."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _CONVERTED_BASES) or super().is_leaf_module(m, qualname)


class _Outputs(nn.Module):
    """What a network returns to SparK: every stage's map when it has ``forward_intermediates``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor):
        if hasattr(self.module, "forward_intermediates"):
            return self.module.forward_intermediates(x, intermediates_only=True)
        return self.module(x)


class _Graph:
    """A network's torch.fx graph, with each called layer and how many times it is called."""

    def __init__(self, module: nn.Module, graph: torch.fx.Graph) -> None:
        self.root, self.graph = _Outputs(module), graph
        self.calls = collections.Counter(node.target for node in graph.nodes if node.op == "call_module")

    def called_once(self):
        """(node, layer) for every layer called exactly once."""
        for node in self.graph.nodes:
            if node.op == "call_module" and self.calls[node.target] == 1:
                yield node, self.root.get_submodule(node.target)

    def layer(self, node: torch.fx.Node) -> nn.Module | None:
        return self.root.get_submodule(node.target) if node.op == "call_module" else None


def _traced(module: nn.Module) -> _Graph | None:
    """The torch.fx graph of the dense network, which sees every use of a layer's output (functional ones too).
    None for a network fx cannot trace: then every sparse layer masks its own output and no ReLU is folded, which
    only costs time."""
    try:
        return _Graph(module, _LayerTracer().trace(_Outputs(module)))
    except Exception as err:  # noqa: BLE001 - any tracing failure just means no saving
        logger.debug("%s not traceable by torch.fx (%s): every sparse layer masks its output",
                     type(module).__name__, err)
        return None


def _outputs_only_normalized(graph: _Graph) -> list[nn.Module]:
    """The conv/pool layers called once whose output is used by absorbing norms only."""
    return [layer for node, layer in graph.called_once()
            if isinstance(layer, _MASKED_OUTPUT_BASES) and node.users
            and all(isinstance(graph.layer(user), _ABSORBING_NORMS) for user in node.users)]


def _relus_after_batch_norms(graph: _Graph) -> list[tuple[nn.Module, nn.Module]]:
    """(BatchNorm, ReLU) pairs, each called once, where the ReLU is the only use of the norm's output (through
    identities, such as timm's disabled DropBlock)."""
    pairs = []
    for node, norm in graph.called_once():
        if type(norm) is not nn.BatchNorm2d:
            continue
        while len(node.users) == 1 and isinstance(graph.layer(user := next(iter(node.users))), nn.Identity):
            node = user
        if len(node.users) != 1:
            continue
        (user,) = node.users
        relu = graph.layer(user)
        if type(relu) is nn.ReLU and graph.calls[user.target] == 1:
            pairs.append((norm, relu))
    return pairs


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
