"""EXIF orientation in segmentation data: an image is read as displayed, and its mask ends up aligned with it.

Masks are read in their displayed orientation too: a mask carrying its photo's EXIF tag (stored sideways like
the photo) is turned by it; a mask without one is taken as drawn on the displayed image, as annotation tools
save it. A mask drawn on the stored (sideways) pixels cannot be aligned and is reported, saying why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenetv2_dense.datasets.checks import DatasetWarning
from mobilenetv2_dense.datasets.segmentation.voc import read_mask, save_palette_png
from mobilenetv2_dense.tasks.segmentation.datamodule import VOCSegmentationDataModule
from tests.conftest import RED, scene

CAT = 8  # the VOC label the red patch carries
# Displayed: 40 wide, 60 high, red patch at x 5..25, y 30..55 (as in the COCO fixture's EXIF image).
DISPLAYED_BOX = (5, 30, 25, 55)


def rotated_exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def write_tree(root: Path, mask_frame: str) -> Path:
    """A VOC2012 tree whose only val image is stored sideways with EXIF orientation 6 ("rotate 90 degrees
    clockwise to display"); its mask is saved in ``mask_frame``: ``"displayed"`` (no EXIF), ``"stored+exif"``
    (sideways, carrying the same tag) or ``"stored"`` (sideways, no tag: drawn on the raw pixels)."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    x0, y0, x1, y1 = DISPLAYED_BOX
    display = Image.fromarray(scene(60, 40, [(DISPLAYED_BOX, RED)]))
    display.transpose(Image.Transpose.ROTATE_90).save(voc / "JPEGImages" / "photo.jpg", quality=95, subsampling=0,
                                                       exif=rotated_exif())
    labels = np.zeros((60, 40), dtype=np.uint8)
    labels[y0:y1, x0:x1] = CAT
    path = voc / "SegmentationClass" / "photo.png"
    if mask_frame == "displayed":
        save_palette_png(labels, path)
    else:
        save_palette_png(np.rot90(labels).copy(), path)  # ROTATE_90 = np.rot90: counter-clockwise
        if mask_frame == "stored+exif":
            with Image.open(path) as mask:
                mask.load()
            mask.save(path, exif=rotated_exif())
    (voc / "ImageSets/Segmentation/train.txt").write_text("photo\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("photo\n")
    return root


def val_sample(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first val sample through the data module, as ``(H, W, 3)`` uint8-ish image and ``(H, W)`` mask."""
    dm = VOCSegmentationDataModule(str(root), val_batch_size=1, num_workers=0, mean=(0.0, 0.0, 0.0),
                                   std=(1 / 255, 1 / 255, 1 / 255), strict=True)
    dm.setup("validate")
    images, masks, *_ = next(iter(dm.val_dataloader()))
    return images[0].permute(1, 2, 0).numpy(), masks[0].numpy()


@pytest.mark.parametrize("mask_frame", ["displayed", "stored+exif"])
def test_mask_and_image_of_an_exif_rotated_photo_coincide(tmp_path: Path, mask_frame: str) -> None:
    image, mask = val_sample(write_tree(tmp_path, mask_frame))
    assert image.shape[:2] == mask.shape == (60, 40)  # the displayed frame
    red = (np.abs(image - np.array(RED)) < 40).all(axis=2)
    assert red.sum() == (mask == CAT).sum() == 20 * 25
    assert np.array_equal(red, mask == CAT)


def test_read_mask_applies_the_mask_files_own_orientation(tmp_path: Path) -> None:
    root = write_tree(tmp_path, "stored+exif")
    mask, converted = read_mask(root / "VOCdevkit/VOC2012/SegmentationClass/photo.png")
    x0, y0, x1, y1 = DISPLAYED_BOX
    assert mask.shape == (60, 40) and not converted
    assert np.array_equal(np.argwhere(mask == CAT).min(0), [y0, x0])
    assert np.array_equal(np.argwhere(mask == CAT).max(0) + 1, [y1, x1])


def test_mask_drawn_on_the_stored_pixels_is_reported_with_the_reason(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    root = write_tree(tmp_path, "stored")
    dm = VOCSegmentationDataModule(str(root), num_workers=0)
    with pytest.warns(DatasetWarning, match="before its EXIF orientation 6"), pytest.raises(ValueError,
                                                                                           match="no usable"):
        dm.setup("validate")
    assert "masks of the wrong size" in capsys.readouterr().out
