import pytest
import torch

from spark.model import SparKConfig, build_spark
from spark.loss import denormalize_patches, patchify, unpatchify
from spark.masking import upsample_visible


def _reference_loss(images, prediction, visible, p, masked_only):
    """Straightforward per-image, per-patch loop."""
    b, _, h, w = images.shape
    total, count = 0.0, 0
    for i in range(b):
        for r in range(h // p):
            for c in range(w // p):
                if masked_only and visible[i, 0, r, c]:
                    continue
                target = images[i, :, r * p:(r + 1) * p, c * p:(c + 1) * p].double()
                target = (target - target.mean()) / torch.sqrt(torch.var(target) + 1e-6)
                pred = prediction[i, :, r * p:(r + 1) * p, c * p:(c + 1) * p].double()
                total += ((pred - target) ** 2).mean().item()
                count += 1
    return total / count


@pytest.mark.parametrize("loss_on", ["masked", "all"])
def test_loss_matches_straightforward_computation(loss_on):
    model = build_spark(SparKConfig(arch="resnet18", input_size=96, decoder_width=64, loss_on=loss_on))
    images = torch.randn(3, 3, 96, 96) * 2 + 0.5
    prediction = torch.randn(3, 3, 96, 96)
    visible = model.sample_visible(3)
    got = model.forward_loss(images, prediction, visible).item()
    assert got == pytest.approx(_reference_loss(images, prediction, visible, 32, loss_on == "masked"), rel=1e-5)


def test_masked_only_scores_the_masked_patches_and_all_scores_every_patch():
    """A prediction exact on one set of patches and wrong on the other: the masked-only loss sees only the masked
    patches' error, the all-patches ablation the mean over every patch (masked patches' share of it)."""
    masked_only = build_spark(SparKConfig(arch="resnet18", input_size=96, decoder_width=64))
    every_patch = build_spark(SparKConfig(arch="resnet18", input_size=96, decoder_width=64, loss_on="all"))
    images = torch.randn(2, 3, 96, 96)
    visible = masked_only.sample_visible(2)
    patches = patchify(images, 32)
    exact = unpatchify((patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt(),
                       32, (3, 3))
    shown = upsample_visible(visible, (96, 96))
    wrong_where_masked = torch.where(shown, exact, exact + 1.0)  # per-patch MSE 1 at masked patches, 0 at visible
    wrong_where_visible = torch.where(shown, exact + 1.0, exact)
    masked_share = (~visible).sum().item() / visible.numel()  # 5 of 9 cells at ratio 0.6
    assert masked_only.forward_loss(images, exact, visible).item() == pytest.approx(0, abs=1e-10)
    assert every_patch.forward_loss(images, exact, visible).item() == pytest.approx(0, abs=1e-10)
    assert masked_only.forward_loss(images, wrong_where_masked, visible).item() == pytest.approx(1.0, rel=1e-5)
    assert masked_only.forward_loss(images, wrong_where_visible, visible).item() == pytest.approx(0, abs=1e-10)
    assert every_patch.forward_loss(images, wrong_where_masked, visible).item() == pytest.approx(masked_share, rel=1e-5)
    assert every_patch.forward_loss(images, wrong_where_visible, visible).item() == pytest.approx(1 - masked_share,
                                                                                                   rel=1e-5)
    torch.testing.assert_close(denormalize_patches(exact, images, 32), images, atol=1e-4, rtol=1e-4)


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 64, 96)
    patches = patchify(x, 32)
    assert patches.shape == (2, 6, 32 * 32 * 3)
    assert torch.equal(unpatchify(patches, 32, (2, 3)), x)
    assert torch.equal(patches[0, 1].reshape(32, 32, 3).permute(2, 0, 1), x[0, :, :32, 32:64])
