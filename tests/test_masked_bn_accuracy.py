"""Masked BatchNorm keeps fp32's precision: at least as accurate as BatchNorm on the gathered visible sites.

Moments from a plain sum and sum of squares (E[x^2] - mean^2) cancel when the mean is large against the spread.
Errors are measured against the same computation in float64. In a randomly initialised resnet18 BN inputs have
|mean| / std < 5, so the cancellation shows in the batch statistics (5e-6 instead of 1e-6) but hardly in the
stem gradient, which the downstream BNs make insensitive to the scale of a variance.
"""
import copy

import pytest
import torch
from torch import Tensor, nn

from spark.model import SparKConfig, build_spark
from spark.masking import upsample_visible
from spark.sparse import VisibleMask, MaskedBatchNorm, ReluInNorm, sparsify


class GatherBatchNorm(MaskedBatchNorm, nn.BatchNorm2d):
    """The reference: BatchNorm of the visible sites gathered into (N, C) (``torch.var_mean``), scattered back."""

    def normalize(self, x: Tensor, relu: bool = False) -> Tensor:
        shown = self.visible_mask.at(x.shape[-2:])[:, 0]
        rows = x.permute(0, 2, 3, 1)[shown]
        var, mean = torch.var_mean(rows, 0, correction=0)
        with torch.no_grad():  # momentum None: the running statistics become this batch's
            self.num_batches_tracked.add_(1)
            self.running_mean.copy_(mean)
            self.running_var.copy_(var * len(rows) / (len(rows) - 1))
        out = (rows - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        out = out.relu() if relu else out
        return x.new_zeros(x.shape[0], *x.shape[2:], x.shape[1]).index_put((shown,), out).permute(0, 3, 1, 2)


def _gathered(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, MaskedBatchNorm):
            m.__class__ = GatherBatchNorm
    return model


def _unfolded(model: nn.Module) -> nn.Module:
    """The model with every ReLU applied by its own module again (the hooks below record ReLU modules)."""
    for m in model.modules():
        if isinstance(m, MaskedBatchNorm):
            m.applies_relu = False
        if isinstance(m, ReluInNorm):
            m.__class__ = nn.ReLU
    return model


def _branches(model: nn.Module, branches: dict) -> nn.Module:
    """Record the ReLU gates and max-pool choices of ``model``'s forward into ``branches``; replay them if filled.

    A ReLU network's gradient jumps where a pre-activation crosses 0, and fp32 rounding pushes the few of the
    million pre-activations within ~1e-7 of 0 across: a lottery that would dominate the fp32 vs float64 difference
    (1e-3 to 1e-2 against 2e-6). Replaying the fp32 run's branches, float64 computes the exact gradient of the
    same piecewise-linear function, so the difference is the rounding error alone.
    """

    def act(name):
        def hook(module, args, out):
            x = args[0]
            if name not in branches:
                gate = (out == x) & (x != 0)
                branches[name] = gate, (out - x * gate).detach()  # 0, or 6 where a ReLU6 saturates
                return None
            gate, constant = branches[name]
            return x * gate + constant.to(x.dtype)

        return hook

    def pool(name):
        def hook(module, args, out):
            x = args[0]
            if name not in branches:
                pool = nn.functional.max_pool2d
                branches[name] = pool(x, module.kernel_size, module.stride, module.padding, return_indices=True)[1]
                return None
            index = branches[name]
            return x.flatten(2).gather(2, index.flatten(2)).view_as(out) * module.visible_mask.like(out)

        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            m.inplace = False  # the hook needs the input
            m.register_forward_hook(act(name))
        elif isinstance(m, nn.MaxPool2d):
            m.register_forward_hook(pool(name))
    return model


def _step(model, images, visible):
    """Encoder features, loss and stem-conv weight gradient of one SparK training step."""
    features = model.forward_encoder(images, visible)
    loss = model.forward_loss(images, model.forward_decoder(features, visible), visible)
    loss.backward()
    return features, loss, model.encoder.conv1.weight.grad


def _relative_error(got: Tensor, want: Tensor) -> float:
    """||got - want|| / ||want|| (Frobenius), in float64."""
    return ((got.double() - want).norm() / want.norm()).item()


def _variance_error(got: nn.Module, want: nn.Module) -> float:
    """Largest relative error of a masked BN's batch variance (its running_var after one step, momentum None)."""
    norms = [(a, b) for a, b in zip(got.modules(), want.modules()) if isinstance(a, MaskedBatchNorm)]
    return max(((a.running_var.double() - b.running_var) / b.running_var).abs().max().item() for a, b in norms)


def test_fp32_is_as_accurate_as_gathered_batchnorm():
    torch.manual_seed(0)  # resnet18 at random init, a 128 px batch of 8, a 60% mask
    model = _unfolded(build_spark(SparKConfig(arch="resnet18", input_size=128, decoder_width=128, mask_ratio=0.6)))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # the running statistics after one step are the batch's
    images = torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    visible = model.sample_visible(8, generator=torch.Generator().manual_seed(2))

    def run(branches, dtype=torch.float32, gathered=False):
        m = copy.deepcopy(model)
        m = _branches((_gathered(m) if gathered else m).to(dtype), branches)
        return m, _step(m, images.to(dtype), visible)

    fp32, (_, _, grad) = run(branches := {})
    fp64, exact = run(branches, torch.float64)
    # The masked BN is the gathered one: equal in float64 up to rounding, outputs and running statistics alike.
    fp64_gathered, exact_gathered = run(branches, torch.float64, gathered=True)
    for got, want in zip(exact, exact_gathered):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for (name, a), b in zip(fp64.state_dict().items(), fp64_gathered.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)

    # Each fp32 run against float64 on its own branches.
    fp32_gathered, (_, _, grad_gathered) = run(gathered_branches := {}, gathered=True)
    fp64_for_gathered, (_, _, exact_for_gathered) = run(gathered_branches, torch.float64)
    error, error_gathered = _relative_error(grad, exact[2]), _relative_error(grad_gathered, exact_for_gathered)
    assert error <= 1.5 * error_gathered, f"stem gradient error {error:.2e}, gathered BatchNorm's {error_gathered:.2e}"
    error, error_gathered = _variance_error(fp32, fp64), _variance_error(fp32_gathered, fp64_for_gathered)
    assert error <= 1.5 * error_gathered, f"batch variance error {error:.2e}, gathered BatchNorm's {error_gathered:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_moments_far_from_zero_mean_keep_fp32_precision(dtype):
    g = torch.Generator().manual_seed(0)
    visible = torch.rand(4, 1, 4, 4, generator=g) > 0.5
    shown = upsample_visible(visible, (16, 16))
    x = ((1000 + torch.randn(4, 8, 16, 16, generator=g)) * shown).to(dtype)
    bn = sparsify(nn.BatchNorm2d(8, momentum=None), mask := VisibleMask())  # cumulative: stats of this batch
    with mask.use(visible):
        bn(x)
    rows = x.double().permute(0, 2, 3, 1)[shown[:, 0]]
    torch.testing.assert_close(bn.running_mean, rows.mean(0).float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(bn.running_var, rows.var(0).float(), rtol=1e-5, atol=0)
