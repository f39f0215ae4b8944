import pytest
import torch

from spark.model import SparKConfig, build_spark
from spark.loss import denormalize_patches, patchify, unpatchify


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


def test_masked_and_all_differ_and_perfect_prediction_scores_zero():
    model = build_spark(SparKConfig(arch="resnet18", input_size=64, decoder_width=64))
    images = torch.randn(2, 3, 64, 64)
    visible = model.sample_visible(2)
    patches = patchify(images, 32)
    target = unpatchify((patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt(), 32, (2, 2))
    assert model.forward_loss(images, target, visible).item() == pytest.approx(0, abs=1e-10)
    torch.testing.assert_close(denormalize_patches(target, images, 32), images, atol=1e-4, rtol=1e-4)


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 64, 96)
    patches = patchify(x, 32)
    assert patches.shape == (2, 6, 32 * 32 * 3)
    assert torch.equal(unpatchify(patches, 32, (2, 3)), x)
    assert torch.equal(patches[0, 1].reshape(32, 32, 3).permute(2, 0, 1), x[0, :, :32, 32:64])
