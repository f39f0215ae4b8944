import pytest
import torch
from torch import nn

from spark.model import SparKConfig, build_spark
from spark.sparse import convert_sync_batchnorm
from spark.sparse import MaskedBatchNorm

PAPER_ARCHS = ["resnet50", "resnet101", "resnet152", "resnet200", "convnext_small", "convnext_base", "convnext_large"]


@pytest.mark.parametrize("arch,kwargs,ratio", [("resnet18", {}, 32), ("resnet18", {"encoder_kwargs": {"output_stride": 16}}, 16), ("convnext_atto", {}, 32)])
def test_decoder_output_matches_input(arch, kwargs, ratio):
    model = build_spark(SparKConfig(arch=arch, input_size=64, decoder_width=64, **kwargs))
    assert model.downsample_ratio == ratio and len(model.decoder.blocks) == {16: 4, 32: 5}[ratio]
    x = torch.randn(2, 3, 64, 64)
    visible = model.sample_visible(2)
    assert model.forward_decoder(model.forward_encoder(x, visible), visible).shape == x.shape
    images, masked, pasted = model.reconstruct(x, visible)
    assert images.shape == masked.shape == pasted.shape == x.shape


def test_single_scale_uses_only_the_coarsest_map():
    """Single-scale (hierarchy 1): the encoder hands over its coarsest map only, and every decoder block past the
    first receives exactly the previous block's output, nothing added; multi-scale adds a map at each of 4 blocks."""
    full = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))
    single = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64, hierarchy=1))
    x, visible = torch.randn(2, 3, 64, 64), single.sample_visible(2)
    feats = single.forward_encoder(x, visible)
    assert len(feats) == 1 and feats[0].shape == (2, 512, 2, 2)
    assert len(single.densify) == 1 and len(full.densify) == 4

    def added_per_block(model):
        """For each decoder block: |its input - the previous block's output| (the first block: its input's norm)."""
        inputs, outputs = [], []
        for block in model.decoder.blocks:
            block.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
            block.register_forward_hook(lambda m, args, out: outputs.append(out))
        assert model.forward_decoder(model.forward_encoder(x, visible), visible).shape == x.shape
        return [inputs[0].norm().item()] + [(i - o).norm().item() for i, o in zip(inputs[1:], outputs)]

    single_added, full_added = added_per_block(single), added_per_block(full)
    assert len(single_added) == len(full_added) == 5
    assert single_added[0] > 0 and single_added[1:] == [0.0] * 4
    assert all(a > 0 for a in full_added[:4]) and full_added[4] == 0.0  # 4 scales into 5 blocks


def test_architecture_choices():
    cnx = build_spark(SparKConfig(arch="convnext_small", input_size=64, decoder_width=768))
    assert isinstance(cnx.densify[0].proj, nn.Identity)  # 768 == 768 at the coarsest scale
    assert cnx.densify[1].proj.kernel_size == (3, 3)
    r = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=256))
    assert r.densify[0].proj.kernel_size == (1, 1) and isinstance(r.densify[0].norm, nn.BatchNorm2d)
    assert [b.conv[0].in_channels for b in r.decoder.blocks] == [256, 128, 64, 32, 16]
    assert r.decoder.head.out_channels == 3 and r.decoder.head.in_channels == 8
    assert isinstance(r.decoder.blocks[0].up_sample, nn.ConvTranspose2d)
    assert [type(m).__name__ for m in r.decoder.blocks[0].conv] == ["Conv2d", "BatchNorm2d", "ReLU6", "Conv2d", "BatchNorm2d"]
    deeper = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64, decoder_depth=3))
    assert len(deeper.decoder.blocks[0].conv) == 8
    assert all(abs(d.mask_token).max() <= 0.02 for d in r.densify)
    assert r.no_weight_decay() == {f"densify.{i}.mask_token" for i in range(4)}


def test_paper_models_build():
    with torch.device("meta"):
        for arch in PAPER_ARCHS:
            model = build_spark(SparKConfig(arch=arch, input_size=224))
            assert model.grid == (7, 7) and model.num_visible == 20


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"arch": "resnet18", "input_size": 100}, "input_size: must be a positive multiple of the downsample ratio 32"),
        ({"arch": "resnet18", "input_size": 64, "mask_ratio": 1.0}, "mask_ratio: must be in"),
        ({"arch": "resnet18", "input_size": 64, "mask_ratio": 0.0}, "mask_ratio: must be in"),
        ({"arch": "not_a_net", "input_size": 64}, "unknown timm architecture 'not_a_net'"),
        ({"arch": "resnet18", "input_size": 64, "encoder_mode": "dense"}, "encoder_mode: must be one of"),
        ({"arch": "resnet18", "input_size": 64, "loss_on": "visible"}, "loss_on: must be one of"),
        ({"arch": "resnet18", "input_size": 64, "hierarchy": 5}, r"hierarchy: must be in \[1, 4\]"),
        ({"arch": "resnet18", "input_size": 64, "decoder_width": 100}, "decoder_width: must be a positive multiple of the downsample ratio"),
        ({"arch": "resnet18", "input_size": 64, "encoder_kwargs": {"nonsense": [1]}},
         "encoder_kwargs: .*unexpected keyword argument 'nonsense'"),
    ],
)
def test_bad_calls_fail_with_one_clear_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparKConfig(**kwargs)


def test_forward_rejects_mismatched_mask():
    model = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))
    with pytest.raises(ValueError, match=r"visible must be a bool tensor of shape \(2, 1, 2, 2\)"):
        model(torch.randn(2, 3, 64, 64), torch.ones(2, 1, 3, 3, dtype=torch.bool))


def test_convert_sync_batchnorm_keeps_masked_norms():
    model = convert_sync_batchnorm(build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64)))
    masked = [m for m in model.modules() if isinstance(m, MaskedBatchNorm)]
    assert masked and all(m.sync for m in masked)
    assert all(isinstance(b.conv[1], nn.SyncBatchNorm) for b in model.decoder.blocks)
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
