"""The generated shapes scenes written in the exact PASCAL VOC 2012 segmentation layout.

The demo reads them back through :class:`mobilenetv2_dense.tasks.segmentation.datamodule.ShapesVOCDataModule`, a
:class:`~mobilenetv2_dense.tasks.segmentation.datamodule.VOCSegmentationDataModule`, so it runs exactly the code a
real VOC download goes through: JPEGs, palette PNGs with the VOC colour map, a void (255) band around every object
as the VOC annotators drew it, split lists, and images of varied, non-square sizes for full-resolution evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..synthetic import SHAPE_CLASSES, render_scene
from .voc import IGNORE_INDEX, save_palette_png

SHAPES_CLASSES = ("background", *SHAPE_CLASSES)


def label_map(height: int, width: int, objects: list, *, void_width: int = 2) -> np.ndarray:
    """``(H, W)`` uint8 labels from ``render_scene`` objects: 0 background, 1..K-1 shapes, 255 on a band about
    ``2 * void_width + 1`` pixels wide wherever two labels meet (VOC's void border around objects)."""
    labels = np.zeros((height, width), dtype=np.uint8)
    for obj in objects:  # visible masks are disjoint, so order does not matter
        labels[obj.mask] = obj.label
    size = 2 * void_width + 1
    # A pixel is on a boundary when its neighbourhood holds two different labels: max != min, vectorised.
    border = ndimage.maximum_filter(labels, size=size) != ndimage.minimum_filter(labels, size=size)
    labels[border] = IGNORE_INDEX
    return labels


def write_shapes_voc(root: str | Path, *, num_train: int = 600, num_val: int = 100,
                     image_size: int | tuple[int, int] = (256, 320), seed: int = 0) -> Path:
    """Write ``num_train`` + ``num_val`` scenes under ``root/VOCdevkit/VOC2012`` in the VOC layout.

    ``image_size``: each image's height and width are drawn independently from ``(min, max)`` pixels (or fixed
    at an int), so images are mostly not square. Returns the ``VOC2012`` folder.
    """
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", lists):
        folder.mkdir(parents=True, exist_ok=True)
    low, high = (image_size, image_size) if isinstance(image_size, int) else image_size
    rng = np.random.default_rng(seed)
    names = {"train": [], "val": []}
    for i in range(num_train + num_val):
        split = "train" if i < num_train else "val"
        name = f"shapes_{i:06d}"
        height, width = (int(v) for v in rng.integers(low, high + 1, size=2))
        objects = []
        while not objects:  # every VOC segmentation image shows at least one object
            image, objects = render_scene(rng, height, width, max_objects=4, min_size=0.15, max_size=0.6)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=92)
        save_palette_png(label_map(height, width, objects), voc / "SegmentationClass" / f"{name}.png")
        names[split].append(name)
    for split, split_names in (*names.items(), ("trainval", names["train"] + names["val"])):
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in split_names))
    return voc
