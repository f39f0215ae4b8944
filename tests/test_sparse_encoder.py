"""The sparse encoder equals submanifold sparse convolution: tests 1-4 of the core issue."""
import copy

import pytest
import timm.layers
import torch
from timm.layers import LayerNorm, LayerNorm2d
from timm.layers.cbam import CbamModule, LightCbamModule
from torch import nn

from spark.model import SparKConfig, build_spark
from spark.encoder import create_encoder
from spark.masking import upsample_visible
from spark.sparse import MaskedBatchNorm, MaskedOutput, ReluInNorm, VisibleMask, sparsify

ENCODERS = ["resnet18", "resnet50", "resnet10t", "convnext_atto", "convnext_tiny", "seresnet18", "regnety_002", "efficientnet_b0"]


def _features(model, x, indices):
    return model.forward_intermediates(x, indices=indices, intermediates_only=True)


def _randomise_running_stats(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def _relative_error(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


# Every encoder in fp64 (equal up to rounding); in the formats training runs use (fp32 NCHW, fp32 channels_last,
# bf16 autocast), one encoder per kind of sparse layer: BN + max-pool (ResNet), BNAct + SE + depthwise
# (EfficientNet), LayerNorm + channels-last Linear (ConvNeXt).
PRECISION_ENCODERS = ["resnet18", "efficientnet_b0", "convnext_atto"]
ALL_VISIBLE_CASES = [(arch, "fp64") for arch in ENCODERS] + [
    (arch, precision) for precision in ("fp32", "channels_last", "bf16") for arch in PRECISION_ENCODERS]


@pytest.mark.parametrize("arch,precision", ALL_VISIBLE_CASES)
@pytest.mark.parametrize("train", [True, False])
def test_all_visible_equals_dense(arch, precision, train):
    dense, scales = create_encoder(arch)
    # fp64: equality up to rounding, not fp32 noise accumulated over 50 layers
    dense = (dense.double() if precision == "fp64" else dense).train(train)
    if not train:  # non-trivial running statistics
        _randomise_running_stats(dense)
    memory_format = torch.channels_last if precision == "channels_last" else torch.contiguous_format
    dense = dense.to(memory_format=memory_format)
    fp32_dense = copy.deepcopy(dense)  # bf16 only: the exact answer, and how far bf16 moves the dense model from it
    sparse = sparsify(copy.deepcopy(dense), mask := VisibleMask())
    # bf16: 4 images of 4x4 cells, so that train-mode BNs of the last stage normalise 64 values per channel, not 8
    batch, cells = (4, 4) if precision == "bf16" else (2, 2)
    x = torch.randn(batch, 3, 32 * cells, 32 * cells, dtype=torch.float64 if precision == "fp64" else torch.float32)
    x = x.contiguous(memory_format=memory_format)
    indices = list(scales.indices)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        with mask.use(torch.ones(batch, 1, cells, cells, dtype=torch.bool)):
            got = _features(sparse, x, indices)
        want = _features(dense, x, indices)
    assert len(got) == len(want) == 4
    got_state, want_state = sparse.state_dict(), dense.state_dict()
    assert list(got_state) == list(want_state)

    if precision == "bf16":
        # bf16 keeps 8 significant bits (unit roundoff 2^-8 = 0.4%). MaskedBatchNorm normalises in fp32 and rounds
        # once, as the dense fused kernel does (ResNet-18's features come out bit-equal), but other sparse layers
        # round at other points (the visible-mean scaling around squeeze-excitation, the masks in bf16). So the
        # sparse bf16 model is held to the exact (fp32) answer as closely as the dense bf16 model gets to it: its
        # error at most 1.5x the dense model's own bf16 error on the same input, measured rather than guessed
        # (0.3% to 1.3% for ResNet-18 and ConvNeXt, up to 10% at EfficientNet-B0's last scale in train mode; the
        # sparse model measured within 2% of each). A wrong mask, dtype, layout or statistic is off by far more.
        # Weights are not touched by a forward pass and must stay equal.
        want_fp32 = _features(fp32_dense, x, indices)
        for g, w, w32 in zip(got, want, want_fp32):
            assert g.dtype == w.dtype
            own = _relative_error(w, w32)
            assert own < 0.15, f"bf16 noise of {own:.0%} in the dense model: the comparison would be meaningless"
            assert _relative_error(g, w32) <= 1.5 * own + 1e-3
        # Running statistics, measured in the channel's own unit (its std): at most 2% (five ulps) or 3x the dense
        # model's own bf16-vs-fp32 deviation there, whichever is larger (deep EfficientNet BNs, whose inputs differ
        # by 25%; measured 5% against 7.6% there, 7e-6 for ResNet-18). A wrong count, momentum or variance
        # correction on these small maps exceeds that.
        fp32_state = fp32_dense.state_dict()
        for name, a in got_state.items():
            b, b32 = want_state[name], fp32_state[name]
            if name.endswith(("running_mean", "running_var")):
                var = want_state[name.replace("running_mean", "running_var")]
                unit = var.sqrt() if name.endswith("running_mean") else var
                bound = max(2e-2, 3 * ((b - b32).abs() / unit).max().item())
                assert ((a - b).abs() / unit).max() <= bound, name
            else:
                assert torch.equal(a, b), name
        return

    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        if precision == "channels_last":  # sparse layers must not silently fall back to NCHW
            channels_last = torch.channels_last
            assert g.is_contiguous(memory_format=channels_last) == w.is_contiguous(memory_format=channels_last)
        if precision == "fp64":  # the same function: equal up to float64 rounding
            torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-10)
        else:
            # fp32 (unit roundoff 6e-8): one-pass masked moments and other summation orders move results by up to
            # ~1e-5 of the map's scale after 50 layers (measured); 1e-4 leaves margin, a real bug is of order 1.
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item())
    for name, a in got_state.items():  # running statistics (train mode) and untouched weights
        tolerance = 1e-10 if precision == "fp64" else 1e-4
        torch.testing.assert_close(a, want_state[name], atol=min(tolerance, 1e-5), rtol=tolerance, msg=name)


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto", "efficientnet_b0"])
def test_masked_positions_are_zero_in_sparse_mode_only(arch):
    x = torch.randn(2, 3, 128, 128)
    for mode in ("sparse", "zero_out"):
        model = build_spark(SparKConfig(arch=arch, input_size=128, decoder_width=64, encoder_mode=mode))
        visible = model.sample_visible(2)
        for f in model.forward_encoder(x, visible):
            at_masked = f * ~upsample_visible(visible, f.shape[-2:])
            if mode == "sparse":
                assert torch.count_nonzero(at_masked) == 0
            else:
                assert torch.count_nonzero(at_masked) > 0


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto"])
def test_masked_input_pixels_never_reach_the_encoder(arch):
    """The encoder sees the masked image: any change of the pixels under the mask leaves every encoder output and
    the decoder's normalised prediction bit-equal, in both modes (zero_out encodes the same zeroed image densely). Border pixels matter
    most: the stem's receptive field straddles the boundary between a visible and a masked cell."""
    x = torch.randn(2, 3, 64, 64)
    for mode in ("sparse", "zero_out"):
        model = build_spark(SparKConfig(arch=arch, input_size=64, decoder_width=64, encoder_mode=mode)).eval()
        visible = model.sample_visible(2, generator=torch.Generator().manual_seed(1))
        masked = ~upsample_visible(visible, x.shape[-2:])
        assert 0 < masked.sum() < masked.numel()
        changed = x + 10 * torch.randn_like(x) * masked
        features, features_changed = model.forward_encoder(x, visible), model.forward_encoder(changed, visible)
        for f, g in zip(features, features_changed, strict=True):
            assert torch.equal(f, g), f"{mode}: pixels under the mask moved a {tuple(f.shape)} encoder map"
        assert torch.equal(model.forward_decoder(features, visible), model.forward_decoder(features_changed, visible))


# The first convolution of each encoder; the layer after it normalises per position (BN, BNAct, LayerNorm2d).
STEMS = {"resnet18": "conv1", "convnext_atto": "stem.0", "seresnet18": "conv1", "efficientnet_b0": "conv_stem",
         "regnety_002": "stem.conv"}


def _trained_like(encoder, train):
    """Norm affines, layer scales and running statistics away from their init values, which hide spatial mixing:
    zero-initialised last BNs and 1e-6 layer scales make residual branches vanish at initialisation."""
    with torch.no_grad():
        for m in encoder.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, LayerNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        for name, p in encoder.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
    if not train:
        _randomise_running_stats(encoder)


@pytest.mark.parametrize("arch", list(STEMS))
@pytest.mark.parametrize("train", [True, False])
def test_masked_features_inside_the_encoder_never_reach_visible_outputs(arch, train):
    """Submanifold sparsity where it lives, inside the encoder: noise added at the masked positions of the stem
    conv's output (after the input pixels were zeroed, so the input zeroing cannot hide it) changes no visible output
    at any of the 4 scales, nor the BN statistics, in sparse mode. The zero_out ablation (the dense encoder on the
    zeroed image) has no such property: the same noise changes visible outputs at every scale."""
    x = torch.randn(2, 3, 64, 64)
    for mode in ("sparse", "zero_out"):
        clean = build_spark(SparKConfig(arch=arch, input_size=64, decoder_width=64, encoder_mode=mode)).train(train)
        _trained_like(clean.encoder, train)
        noisy = copy.deepcopy(clean)
        visible = clean.sample_visible(2, generator=torch.Generator().manual_seed(1))  # 2 of 4 cells visible per image
        injected = []

        def add_noise(module, inputs, out, visible=visible, injected=injected):
            masked = ~upsample_visible(visible, out.shape[-2:])
            noise = 5 * torch.randn_like(out) * masked
            injected.append(torch.count_nonzero(noise).item())
            return out + noise

        noisy.encoder.get_submodule(STEMS[arch]).register_forward_hook(add_noise)
        feats, feats_noisy = clean.forward_encoder(x, visible), noisy.forward_encoder(x, visible)
        assert len(injected) == 1 and injected[0] > 0
        assert len(feats) == len(feats_noisy) == 4
        for f, fn in zip(feats, feats_noisy):
            shown = upsample_visible(visible, f.shape[-2:]).expand_as(f)
            change = (f[shown] - fn[shown]).abs().max().item()
            if mode == "sparse":
                assert change == 0, f"{tuple(f.shape)}: masked-position noise moved visible outputs by {change}"
                assert torch.count_nonzero(fn[~shown]) == 0
            else:
                assert change > 1e-3 * f[shown].abs().max().item(), f"zero_out unaffected at {tuple(f.shape)}"
        if mode == "sparse":
            for (name, a), b in zip(clean.encoder.state_dict().items(), noisy.encoder.state_dict().values()):
                assert torch.equal(a, b), name


# Layers whose statistics span masked positions; sparsify must refuse them wherever they sit.
UNSUPPORTED_LAYERS = {
    "GroupNorm": lambda: nn.GroupNorm(2, 8),
    "InstanceNorm2d": lambda: nn.InstanceNorm2d(8),
    "LocalResponseNorm": lambda: nn.LocalResponseNorm(2),
    "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d(1),
    "AdaptiveMaxPool2d": lambda: nn.AdaptiveMaxPool2d(1),
    "SyncBatchNorm": lambda: nn.SyncBatchNorm(8),
    "GatherExcite": lambda: timm.layers.GatherExcite(8, use_mlp=False),  # timm 1.0.31 cannot build its MLP
    "GlobalContext": lambda: timm.layers.GlobalContext(8),
    "CbamModule": lambda: CbamModule(8),
    "LightCbamModule": lambda: LightCbamModule(8),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED_LAYERS))
def test_sparsify_refuses_layers_whose_statistics_span_masked_positions(name):
    layer = UNSUPPORTED_LAYERS[name]()
    assert type(layer).__name__ == name
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Sequential(nn.BatchNorm2d(8), layer), nn.ReLU())
    with pytest.raises(TypeError, match=rf"^{name} has no sparse version: its statistics would include masked"):
        sparsify(model, VisibleMask())


def test_a_timm_encoder_with_group_norm_is_refused():
    with pytest.raises(TypeError, match=r"^GroupNorm has no sparse version"):
        build_spark(SparKConfig(arch="resnet50_gn", input_size=64, decoder_width=64))
    # The dense ablation needs no sparse form.
    build_spark(SparKConfig(arch="resnet50_gn", input_size=64, decoder_width=64, encoder_mode="zero_out"))


def _gather(x, shown):
    """(B, C, H, W) -> (N, C) at visible sites: the reference's gather."""
    return x.permute(0, 2, 3, 1)[shown[:, 0]]


def test_masked_batchnorm_equals_batchnorm1d_on_visible_sites():
    visible = torch.rand(4, 1, 3, 3) > 0.5
    visible[0, 0, 0, 0] = True
    shown = upsample_visible(visible, (12, 12))
    x = torch.randn(4, 8, 12, 12) * shown

    masked_bn = sparsify(nn.BatchNorm2d(8), mask := VisibleMask())
    ref = nn.BatchNorm1d(8)
    with torch.no_grad():
        for bn in (masked_bn, ref):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        ref.load_state_dict(masked_bn.state_dict())

    xs, xr = x.clone().requires_grad_(True), _gather(x, shown).detach().requires_grad_(True)
    upstream = torch.randn(4, 8, 12, 12)
    with mask.use(visible):
        out = masked_bn(xs)
    out_ref = ref(xr)
    torch.testing.assert_close(_gather(out, shown), out_ref, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(out * ~shown) == 0
    (out * upstream).sum().backward()
    (out_ref * _gather(upstream, shown)).sum().backward()
    torch.testing.assert_close(_gather(xs.grad, shown), xr.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked_bn.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(masked_bn.bias.grad, ref.bias.grad, atol=1e-4, rtol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(masked_bn, name), getattr(ref, name), atol=1e-6, rtol=1e-5)

    masked_bn.eval(), ref.eval()
    with mask.use(visible):
        torch.testing.assert_close(_gather(masked_bn(x), shown), ref(_gather(x, shown)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_masked_batchnorm_ignores_masked_inputs_exactly_in_float64(train, affine, relu, channels_last):
    """The masked BN's own autograd: output, input gradient, affine gradients and running statistics equal
    BatchNorm1d (then ReLU, when the norm applies it) on the gathered visible sites to float64 rounding, whatever
    the input holds at masked positions (convs feeding it leave their output unmasked), with zeros there in output
    and gradient; in both memory layouts."""
    g = torch.Generator().manual_seed(0)
    visible = torch.rand(4, 1, 3, 3, generator=g) > 0.5
    visible[0, 0, 0, 0] = True
    shown = upsample_visible(visible, (12, 12))
    x = torch.randn(4, 8, 12, 12, generator=g, dtype=torch.float64) + 3  # garbage masked
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x.requires_grad_(True)
    masked_bn = sparsify(nn.BatchNorm2d(8, affine=affine).double(), mask := VisibleMask())
    masked_bn.applies_relu = relu
    ref = nn.BatchNorm1d(8, affine=affine).double()
    with torch.no_grad():
        if affine:
            masked_bn.weight.uniform_(0.5, 1.5, generator=g)
            masked_bn.bias.uniform_(-0.5, 0.5, generator=g)
        masked_bn.running_mean.uniform_(-1, 1, generator=g)
        masked_bn.running_var.uniform_(0.5, 2, generator=g)
        ref.load_state_dict(masked_bn.state_dict())
    masked_bn.train(train), ref.train(train)
    rows = _gather(x, shown).detach().requires_grad_(True)
    upstream = torch.randn(4, 8, 12, 12, generator=g, dtype=torch.float64)
    with mask.use(visible):
        out = masked_bn(x)
    out_ref = ref(rows).relu() if relu else ref(rows)
    (out * upstream).sum().backward()
    (out_ref * _gather(upstream, shown)).sum().backward()
    exact = dict(atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(_gather(out, shown), out_ref, **exact)
    torch.testing.assert_close(_gather(x.grad, shown), rows.grad, **exact)
    assert torch.count_nonzero(out * ~shown) == 0 and torch.count_nonzero(x.grad * ~shown) == 0
    for (name, a), b in zip(masked_bn.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, **exact, msg=name)
    for (name, a), b in zip(masked_bn.named_buffers(), ref.buffers()):
        torch.testing.assert_close(a, b, **exact, msg=name)


def test_masked_batchnorm_normalises_bf16_in_fp32_and_rounds_once():
    """Under bf16 the scale and shift stay fp32: the output is the fp32 normalisation of the bf16 input with the
    visible sites' statistics, rounded to bf16 once (within one bf16 ulp), as the dense BN's fused kernel does."""
    g = torch.Generator().manual_seed(0)
    visible = torch.rand(4, 1, 3, 3, generator=g) > 0.5
    visible[0, 0, 0, 0] = True
    shown = upsample_visible(visible, (12, 12))
    x = (torch.randn(4, 8, 12, 12, generator=g) * 3 + 5).bfloat16()
    masked_bn = sparsify(nn.BatchNorm2d(8, momentum=None), mask := VisibleMask())  # stats of this batch
    with torch.no_grad():
        masked_bn.weight.uniform_(0.5, 1.5, generator=g)
        masked_bn.bias.uniform_(-0.5, 0.5, generator=g)
    with mask.use(visible):
        out = masked_bn(x)
    rows = _gather(x.float(), shown)
    var, mean = torch.var_mean(rows, 0, correction=0)
    want = (x.float() - mean[:, None, None]) * torch.rsqrt(var + masked_bn.eps)[:, None, None]
    want = (want * masked_bn.weight[:, None, None] + masked_bn.bias[:, None, None]) * shown
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want.detach(), rtol=2**-8, atol=1e-6)


def test_masks_are_skipped_only_where_a_masked_norm_consumes_the_output():
    """A conv whose every use is a BN needs no mask (the BN ignores masked positions and zeroes them); a max-pool
    feeding a conv does, and so does any layer of a network torch.fx cannot trace."""
    model = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))
    layers = {name: m for name, m in model.encoder.named_modules() if isinstance(m, MaskedOutput)}
    assert {name for name, m in layers.items() if m.masks_output} == {"maxpool"}
    assert sum(isinstance(m, nn.Conv2d) for m in layers.values()) == 20

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x  # data-dependent branch: fx cannot trace it

    module = sparsify(Untraceable(), VisibleMask())
    assert module.conv.masks_output

    preact = sparsify(create_encoder("resnetv2_50")[0], VisibleMask())
    # pre-activation ResNet: the stem conv feeds a max-pool; a block's first conv feeds its second norm
    assert preact.stem.conv.masks_output and not preact.stages[0].blocks[0].conv1.masks_output


def test_a_relu_that_alone_consumes_a_masked_norm_is_applied_by_the_norm():
    """ResNet-18: the stem's and every block's first ReLU follow a BN that nothing else reads; a block's last ReLU
    follows the residual sum and stays. The state_dict is untouched, and the ReLU's effect too (the all-visible and
    gathered-BN tests run the folded model)."""
    dense, _ = create_encoder("resnet18")
    keys = list(dense.state_dict())
    sparse = sparsify(dense, VisibleMask())
    folded = {name for name, m in sparse.named_modules() if isinstance(m, ReluInNorm)}
    assert folded == {"act1"} | {f"layer{i}.{j}.act1" for i in range(1, 5) for j in range(2)}
    assert {name for name, m in sparse.named_modules() if isinstance(m, MaskedBatchNorm) and m.applies_relu} == {
        name.replace("act", "bn") for name in folded}
    assert list(sparse.state_dict()) == keys


@pytest.mark.parametrize("channels_last", [False, True])
def test_masked_layernorm_equals_layernorm_on_visible_sites(channels_last):
    visible = torch.rand(2, 1, 4, 4) > 0.5
    shown = upsample_visible(visible, (8, 8))
    x = torch.randn(2, 6, 8, 8) * shown
    norm = LayerNorm(6) if channels_last else LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    ref = nn.LayerNorm(6, eps=norm.eps)
    ref.load_state_dict(norm.state_dict())
    sparse = sparsify(norm, mask := VisibleMask())
    with mask.use(visible):
        out = sparse(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if channels_last else sparse(x)
    torch.testing.assert_close(_gather(out, shown), ref(_gather(x, shown)), atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(out * ~shown) == 0


def test_squeeze_excite_pools_over_visible_positions():
    from timm.layers.squeeze_excite import SEModule

    se = SEModule(8).eval()
    dense = copy.deepcopy(se)
    visible = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    visible[0, 0, 0, 0] = True
    shown = upsample_visible(visible, (8, 8))
    x = torch.rand(1, 8, 8, 8) * shown
    sparse = sparsify(se, mask := VisibleMask())
    with mask.use(visible):
        out = sparse(x)
    # The visible quarter alone, run dense, is what a sparse SE must compute there.
    torch.testing.assert_close(out[..., :4, :4], dense(x[..., :4, :4]), atol=1e-6, rtol=1e-5)
