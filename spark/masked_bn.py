"""BatchNorm over the visible sites of a masked map (optionally followed by a ReLU), as one autograd op.

Equal to gathering the visible (B, H, W) sites into an (N, C) matrix, applying BatchNorm1d and scattering back
into zeros, without data-dependent shapes or host-device syncs. Written as an ``autograd.Function`` because
autograd through the masked moments would save a centred copy of every map and spend about ten passes over it;
this op saves what the native BatchNorm saves (input, mean, inverse std) and computes the gradient in closed form
over the visible sites. A ReLU that only this norm feeds is folded in (``relu``): its gate is recomputed from the
input in the backward pass, so it costs no pass and no saved map. Its input may hold anything finite at masked
positions: they enter neither the statistics nor the output, which is zero there.

It is a composite of PyTorch ops on every device, eager or under ``torch.compile`` (which fuses it with its
neighbours), normalising with the native BatchNorm kernel (in fp32 for bf16 inputs, rounding once as the dense BN
does).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

try:  # traceable by torch.compile, unlike torch.distributed's in-place collectives
    import torch.distributed._functional_collectives as funcol
except ImportError:  # a torch build without distributed support
    funcol = None


def masked_batch_norm(x: Tensor, visible: Tensor, weight: Tensor | None, bias: Tensor | None,
                      running_mean: Tensor | None, running_var: Tensor | None, training: bool,
                      momentum: float, eps: float, sync: bool = False, relu: bool = False) -> Tensor:
    """``F.batch_norm`` of ``x`` (B, C, H, W) over the sites where ``visible`` (bool, (B, 1, H, W)) is True, then
    ReLU if ``relu``; zero at the other sites.

    As in ``F.batch_norm``: in ``training`` the statistics are the visible sites' (all processes' with ``sync``)
    and the running statistics, when given, move toward them by ``momentum``; otherwise the running ones are used.
    """
    if training:
        with torch.no_grad():
            count, mean, deviations = visible_moments(x, visible.to(x.dtype))
        if sync:
            count, mean, deviations = merge_moments(_all_gather(torch.cat([count.reshape(1), mean, deviations])))
        var = deviations / count.clamp_min(1)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.lerp_(mean.to(running_mean.dtype), momentum)
                running_var.lerp_((deviations / (count - 1).clamp_min(1)).to(running_var.dtype), momentum)
    else:
        count, mean, var = None, running_mean, running_var
    return _VisibleBatchNorm.apply(x, visible, weight, bias, mean, var, count, eps, sync, relu)


@torch.no_grad()
def visible_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Count, per-channel mean and sum of squared deviations of the visible sites, in at least fp32.

    One pass for both moments: the sum and sum of squares of ``d = x - shift``, ``shift`` a per-channel value near
    the mean (the first image's visible mean, 1/B of a pass). The relative rounding error of
    ``sum(d^2) - sum(d)^2 / n`` then grows as 1 + (mean - shift)^2 / var instead of 1 + mean^2 / var; the shift
    changes the rounding only.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    first = mask[:1]
    shift = (x[:1] * first).sum((0, 2, 3), dtype=dtype) / first.sum(dtype=dtype).clamp_min(1)
    centered = (x - shift[:, None, None]).mul_(mask)
    count = mask.sum(dtype=dtype)
    total = centered.sum((0, 2, 3))
    offset = total / count.clamp_min(1)
    deviations = (centered.square_().sum((0, 2, 3)) - total * offset).clamp_min(0)
    return count, shift + offset, deviations


def merge_moments(parts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Count, mean and sum of squared deviations of a union from its parts' rows ``[count, mean, deviations]``.

    Chan et al.'s parallel formula: the parts' moments were taken about different shifts, so their sums cannot
    simply be added.
    """
    channels = (parts.shape[1] - 1) // 2
    counts, means, deviations = parts.split([1, channels, channels], dim=1)
    count = counts.sum()
    mean = (counts * means).sum(0) / count.clamp_min(1)
    return count, mean, deviations.sum(0) + (counts * (means - mean).square()).sum(0)


def _all_gather(row: Tensor) -> Tensor:
    """(world_size, len(row)): every process's ``row``."""
    return funcol.wait_tensor(funcol.all_gather_tensor(row[None], 0, dist.group.WORLD))


def _all_reduce(values: Tensor) -> Tensor:
    # wait_tensor, not the result's .wait(): under torch.compile a collective's result can be a plain tensor
    return funcol.wait_tensor(funcol.all_reduce(values, "sum", dist.group.WORLD))


def _reduced_gradient_sums(sum_grad: Tensor, sum_grad_centered: Tensor, count: Tensor, sync: bool
                           ) -> tuple[Tensor, Tensor]:
    """Per-channel means over the visible sites (all processes' with ``sync``) of the gradient and of the
    gradient times the centred input: the two terms the input gradient of a batch-statistics BN subtracts."""
    sums = torch.stack([sum_grad, sum_grad_centered])
    mean_grad, mean_grad_centered = (_all_reduce(sums) if sync else sums) / count.clamp_min(1)
    return mean_grad, mean_grad_centered


class _VisibleBatchNorm(torch.autograd.Function):
    """The composite op: ``(x - mean) / sqrt(var + eps) * weight + bias`` at visible sites (ReLU'd if ``relu``),
    0 elsewhere.

    ``count`` is the number of visible sites the statistics come from (all processes' with ``sync``), or None when
    they are running statistics (constants for the gradient).
    """

    @staticmethod
    def forward(ctx, x, visible, weight, bias, mean, var, count, eps, sync, relu):
        mask = visible.to(x.dtype)
        out = torch.batch_norm(x, weight, bias, mean, var, False, 0.0, eps, torch.backends.cudnn.enabled).mul_(mask)
        if relu:
            out = out.relu_()
        invstd = torch.rsqrt(var + eps)
        # with a ReLU, the gradient passes where the output is > 0 (visible sites only)
        ctx.save_for_backward(x, mask, weight, mean, invstd, count, out if relu else None)
        ctx.sync = sync
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, mask, weight, mean, invstd, count, out = ctx.saved_tensors
        grad = grad_out * (mask if out is None else out > 0)
        # grad_weight = sum(grad * xhat), grad_bias = sum(grad), over all sites: grad is 0 at masked ones
        _, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, None, None, mean, invstd, True, 0.0, [False, True, True])
        grad_x = None
        if ctx.needs_input_grad[0]:
            scale = invstd if weight is None else invstd * weight
            if count is None:
                grad_x = grad * scale[:, None, None]
            else:
                # d/dx of BN at visible sites: scale * (grad - (sum(grad) + xhat * sum(grad * xhat)) / n)
                mean_grad, mean_grad_xhat = _reduced_gradient_sums(grad_bias, grad_weight, count, ctx.sync)
                slope = -scale * invstd * mean_grad_xhat
                # in place in one buffer: one map-sized allocation fewer
                grad_x = torch.sub(x, mean[:, None, None])
                torch.addcmul((-scale * mean_grad)[:, None, None], grad_x, slope[:, None, None], out=grad_x)
                grad_x = grad_x.mul_(mask).addcmul_(grad, scale[:, None, None]).to(x.dtype)
        needs = ctx.needs_input_grad
        return (grad_x, None, grad_weight if needs[2] else None, grad_bias if needs[3] else None,
                None, None, None, None, None, None)

