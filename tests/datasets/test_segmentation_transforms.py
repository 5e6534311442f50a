"""DeepLab augmentation keeps image and mask aligned, pads with the mean pixel / 255, and evaluation is untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mobilenetv2_dense.datasets.segmentation.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transforms,
    train_transforms,
)
from mobilenetv2_dense.datasets.segmentation.voc import VOC_PALETTE

MEAN, STD = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]


def colour_coded(height: int, width: int, *, block: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random labels 0..4 in ``block``-pixel squares (no symmetry: a flip or shift of one side shows) and an image
    whose colour at every pixel is the VOC palette colour of its label: ``(H, W, 3)`` uint8, ``(H, W)`` uint8."""
    grid = np.random.default_rng(seed).integers(0, 5, size=(-(-height // block), -(-width // block)))
    labels = np.kron(grid, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)
    return VOC_PALETTE[labels], labels


def decode_labels(image: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation and map each pixel to the nearest of the palette colours 0..4: ``(H, W)``."""
    rgb = (image * STD + MEAN) * 255  # (3, H, W)
    palette = torch.from_numpy(VOC_PALETTE[:5].astype(np.float32))  # (5, 3)
    distance = ((rgb.permute(1, 2, 0)[:, :, None, :] - palette) ** 2).sum(-1)  # (H, W, 3) -> (H, W, 5)
    return distance.argmin(-1)


@pytest.mark.parametrize("seed", range(12))
def test_train_transforms_keep_image_and_mask_aligned(seed):
    image, labels = colour_coded(90, 130)
    transform = train_transforms(crop_size=64)
    transform.set_random_seed(seed)
    out = transform(image=image, mask=labels)
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32 and out["mask"].shape == (64, 64)
    mask = out["mask"].long()
    # Compare away from label edges (bilinear image vs nearest mask differ there by up to a pixel): pixels whose
    # 3x3 neighbourhood holds one label, on the crop's inner (62, 62).
    m = mask[None, None].float()  # (H, W) -> (1, 1, H, W)
    inner = (F.max_pool2d(m, 3, 1) == -F.max_pool2d(-m, 3, 1))[0, 0] & (mask[1:-1, 1:-1] != 255)
    decoded = decode_labels(out["image"])[1:-1, 1:-1]
    assert inner.sum() > 500
    assert torch.equal(decoded[inner], mask[1:-1, 1:-1][inner]), "image and mask disagree after augmentation"


def test_padding_is_mean_pixel_and_void_at_bottom_right_before_the_flip():
    image, labels = colour_coded(30, 40)
    transform = train_transforms(crop_size=64, scale_range=(1.0, 1.0))
    for seed in range(6):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=labels)
        mask, pixels = out["mask"].long(), out["image"]
        flipped = bool(mask[0, 0] == 255)  # top-left is content unless the crop was flipped left-right
        content = (slice(0, 30), slice(24, 64) if flipped else slice(0, 40))
        expected = torch.from_numpy(labels[:, ::-1].copy() if flipped else labels).long()
        assert torch.equal(mask[content], expected)
        assert (mask == 255).sum() == 64 * 64 - 30 * 40  # all padding is void, no content is
        # The mean pixel, rounded to uint8, normalises to ~0: the same value segmentation_collate pads with.
        assert pixels[:, mask == 255].abs().max() < 0.01


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_scale_range_is_a_factor_on_both_sides(factor):
    image, labels = colour_coded(48, 48)
    out = train_transforms(crop_size=96, scale_range=(factor, factor))(image=image, mask=labels)
    side = int(48 * factor)
    assert (out["mask"] != 255).sum() == min(side, 96) ** 2


def test_eval_transforms_only_normalise():
    image, labels = colour_coded(37, 53)
    out = eval_transforms()(image=image, mask=labels)
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - MEAN) / STD  # (H, W, 3) -> (3, H, W)
    assert torch.allclose(out["image"], expected, atol=1e-5)
    assert torch.equal(out["mask"].long(), torch.from_numpy(labels).long())
