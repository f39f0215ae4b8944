"""The sparse encoder equals submanifold sparse convolution: tests 1-4 of the core issue."""
import copy

import pytest
import torch
from timm.layers import LayerNorm, LayerNorm2d
from torch import nn

from spark import build_spark
from spark.encoder import create_encoder
from spark.masking import upsample_active
from spark.sparse import ActiveMask, sparsify

ENCODERS = ["resnet18", "resnet50", "resnet10t", "convnext_atto", "convnext_tiny", "seresnet18", "regnety_002", "efficientnet_b0"]


def _features(model, x, indices):
    return model.forward_intermediates(x, indices=indices, intermediates_only=True)


@pytest.mark.parametrize("arch", ENCODERS)
@pytest.mark.parametrize("train", [True, False])
def test_all_visible_equals_dense(arch, train):
    dense, scales = create_encoder(arch)
    dense = dense.double().train(train)  # fp64: equality up to rounding, not fp32 noise accumulated over 50 layers
    if not train:  # non-trivial running statistics
        for m in dense.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    sparse = sparsify(copy.deepcopy(dense), mask := ActiveMask())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with mask.use(torch.ones(2, 1, 2, 2, dtype=torch.bool)):
        got = _features(sparse, x, list(scales.indices))
    want = _features(dense, x, list(scales.indices))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(sparse.state_dict().items(), dense.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto", "efficientnet_b0"])
def test_masked_positions_are_zero_in_sparse_mode_only(arch):
    x = torch.randn(2, 3, 128, 128)
    for mode in ("sparse", "zero_out"):
        model = build_spark(arch, 128, decoder_width=64, encoder_mode=mode)
        active = model.mask(2)
        for f in model.forward_encoder(x, active):
            at_masked = f * ~upsample_active(active, f.shape[-2:])
            if mode == "sparse":
                assert torch.count_nonzero(at_masked) == 0
            else:
                assert torch.count_nonzero(at_masked) > 0


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto", "seresnet18", "efficientnet_b0", "regnety_002"])
def test_no_leak_from_masked_pixels(arch):
    model = build_spark(arch, 128, decoder_width=64)
    x = torch.randn(2, 3, 128, 128)
    active = model.mask(2, generator=torch.Generator().manual_seed(1))
    masked_pixels = ~upsample_active(active, (128, 128))
    perturbed = x + 5 * torch.randn_like(x) * masked_pixels

    feats, feats_p = model.forward_encoder(x, active), model.forward_encoder(perturbed, active)
    for f, fp in zip(feats, feats_p):
        assert torch.equal(f, fp)
    prediction = model.forward_decoder(feats, active)
    prediction_p = model.forward_decoder(feats_p, active)
    torch.testing.assert_close(prediction, prediction_p, atol=0, rtol=0)
    assert model.forward_loss(x, prediction, active) == model.forward_loss(x, prediction_p, active)

    x.requires_grad_(True)
    model(x, active).backward()
    grad_masked = x.grad * masked_pixels
    assert torch.count_nonzero(grad_masked) == 0
    assert torch.count_nonzero(x.grad) > 0


def _gather(x, visible):
    """(B, C, H, W) -> (N, C) at visible sites: the reference's gather."""
    return x.permute(0, 2, 3, 1)[visible[:, 0]]


def test_masked_batchnorm_equals_batchnorm1d_on_visible_sites():
    active = torch.rand(4, 1, 3, 3) > 0.5
    active[0, 0, 0, 0] = True
    visible = upsample_active(active, (12, 12))
    x = torch.randn(4, 8, 12, 12) * visible

    masked_bn = sparsify(nn.BatchNorm2d(8), mask := ActiveMask())
    ref = nn.BatchNorm1d(8)
    with torch.no_grad():
        for bn in (masked_bn, ref):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        ref.load_state_dict(masked_bn.state_dict())

    xs, xr = x.clone().requires_grad_(True), _gather(x, visible).detach().requires_grad_(True)
    upstream = torch.randn(4, 8, 12, 12)
    with mask.use(active):
        out = masked_bn(xs)
    out_ref = ref(xr)
    torch.testing.assert_close(_gather(out, visible), out_ref, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(out * ~visible) == 0
    (out * upstream).sum().backward()
    (out_ref * _gather(upstream, visible)).sum().backward()
    torch.testing.assert_close(_gather(xs.grad, visible), xr.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked_bn.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(masked_bn.bias.grad, ref.bias.grad, atol=1e-4, rtol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(masked_bn, name), getattr(ref, name), atol=1e-6, rtol=1e-5)

    masked_bn.eval(), ref.eval()
    with mask.use(active):
        torch.testing.assert_close(_gather(masked_bn(x), visible), ref(_gather(x, visible)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_masked_layernorm_equals_layernorm_on_visible_sites(channels_last):
    active = torch.rand(2, 1, 4, 4) > 0.5
    visible = upsample_active(active, (8, 8))
    x = torch.randn(2, 6, 8, 8) * visible
    norm = LayerNorm(6) if channels_last else LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    ref = nn.LayerNorm(6, eps=norm.eps)
    ref.load_state_dict(norm.state_dict())
    sparse = sparsify(norm, mask := ActiveMask())
    with mask.use(active):
        out = sparse(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if channels_last else sparse(x)
    torch.testing.assert_close(_gather(out, visible), ref(_gather(x, visible)), atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(out * ~visible) == 0


def test_squeeze_excite_pools_over_visible_positions():
    from timm.layers.squeeze_excite import SEModule

    se = SEModule(8).eval()
    dense = copy.deepcopy(se)
    active = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    active[0, 0, 0, 0] = True
    visible = upsample_active(active, (8, 8))
    x = torch.rand(1, 8, 8, 8) * visible
    sparse = sparsify(se, mask := ActiveMask())
    with mask.use(active):
        out = sparse(x)
    # The visible quarter alone, run dense, is what a sparse SE must compute there.
    torch.testing.assert_close(out[..., :4, :4], dense(x[..., :4, :4]), atol=1e-6, rtol=1e-5)
