"""Compositing and occlusion: masks are exact, later objects hide earlier ones, hidden objects get no annotation."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from eval.data.coco_format import annotate
from eval.data.compose import OBJECT_THRESHOLD, Placement, Sprite, make_sprite, object_mask, paste
from eval.data.seeding import item_rng

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def _square(side: int, color: int) -> Sprite:
    return Sprite(np.full((side, side, 3), color, np.uint8), np.ones((side, side), bool))


def _item() -> np.ndarray:
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 8:20] = 200
    item[10:14, 12:16] = 3  # a dark patch inside the garment is still the garment (holes are filled)
    return item


def test_object_mask_is_the_bright_silhouette_with_holes_filled():
    mask = object_mask(_item())
    assert mask.sum() == 20 * 12 and mask[4:24, 8:20].all()
    assert not (_item()[~mask] > OBJECT_THRESHOLD).any()


def test_sprite_is_scaled_tinted_and_masked():
    sprite = make_sprite(_item(), 56, item_rng(0, "test"))
    assert sprite.rgb.shape == (56, 56, 3) and sprite.mask.shape == (56, 56)
    assert abs(int(sprite.mask.sum()) - 4 * 20 * 12) <= 2 * (2 * 40 + 2 * 24)  # area scales by 4, up to the edges
    rows, cols = np.nonzero(sprite.mask)
    assert (rows.min(), rows.max()) == (8, 47) and cols.max() - cols.min() + 1 == 24


def test_paste_changes_only_masked_pixels():
    background = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    sprite = Sprite(np.zeros((8, 8, 3), np.uint8), np.eye(8, dtype=bool))
    image, (visible,) = paste(background, [Placement(sprite, 4, 10)])
    assert (image[~visible] == background[~visible]).all() and (image[visible] == 0).all()
    assert visible.sum() == 8 and visible[4, 10] and visible[11, 17]


def test_occluded_object_keeps_only_its_visible_part():
    background = np.full((64, 64, 3), 128, np.uint8)
    back, front = Placement(_square(20, 10), 10, 10), Placement(_square(20, 250), 20, 20)  # overlap: 10x10
    image, visible = paste(background, [back, front])
    assert visible[0].sum() == 400 - 100 and visible[1].sum() == 400
    assert not (visible[0] & visible[1]).any() and (image[visible[1]] == 250).all()
    annotations = annotate(visible, [1, 2])
    assert [a["area"] for a in annotations] == [300.0, 400.0]
    assert annotations[0]["bbox"] == [10.0, 10.0, 20.0, 20.0]  # the L-shaped remainder spans the full square
    decoded = mask_utils.decode(annotations[0]["segmentation"])
    assert (decoded.astype(bool) == visible[0]).all()


def test_occlusion_that_clips_the_box_shrinks_it():
    back, front = Placement(_square(20, 10), 10, 10), Placement(_square(20, 250), 10, 20)  # covers the right half
    _, visible = paste(np.zeros((64, 64, 3), np.uint8), [back, front])
    assert annotate(visible, [1, 2])[0]["bbox"] == [10.0, 10.0, 10.0, 20.0]


def test_fully_hidden_object_is_dropped():
    hidden, cover = Placement(_square(8, 10), 20, 20), Placement(_square(30, 250), 10, 10)
    _, visible = paste(np.zeros((64, 64, 3), np.uint8), [hidden, cover])
    assert visible[0].sum() == 0
    annotations = annotate(visible, [3, 7])
    assert len(annotations) == 1 and annotations[0]["category_id"] == 7 and annotations[0]["area"] == 900.0
