import pytest
import torch

from spark.model import SparKConfig, build_spark
from spark.masking import num_visible, random_visible, upsample_visible


@pytest.mark.parametrize("grid,ratio,expected", [((7, 7), 0.6, 20), ((7, 7), 0.75, 12), ((4, 4), 0.6, 6), ((2, 2), 0.6, 2)])
def test_exact_visible_count_per_image(grid, ratio, expected):
    assert num_visible(grid, ratio) == expected == round(grid[0] * grid[1] * (1 - ratio))
    visible = random_visible(64, grid, expected)
    assert visible.shape == (64, 1, *grid) and visible.dtype == torch.bool
    assert torch.equal(visible.flatten(1).sum(1), torch.full((64,), expected))


def test_seeded_generator_reproduces_the_mask():
    model = build_spark(SparKConfig(arch="resnet18", input_size=224, decoder_width=64))
    a = model.sample_visible(8, generator=torch.Generator().manual_seed(3))
    b = model.sample_visible(8, generator=torch.Generator().manual_seed(3))
    c = model.sample_visible(8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a.flatten(1).sum(1) == 20).all()


def test_masks_differ_across_images():
    visible = random_visible(32, (7, 7), 20)
    assert len({tuple(m.flatten().tolist()) for m in visible}) > 1


def test_upsample_repeats_each_cell():
    visible = torch.tensor([[[[True, False], [False, True]]]])
    up = upsample_visible(visible, (4, 6))
    assert up.shape == (1, 1, 4, 6)
    assert up[0, 0, :2, :3].all() and not up[0, 0, :2, 3:].any() and up[0, 0, 2:, 3:].all()
    with pytest.raises(ValueError, match="multiple"):
        upsample_visible(visible, (5, 4))
