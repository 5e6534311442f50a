"""The generated shapes scenes written in the exact PASCAL VOC 2012 segmentation layout, and their data module.

The demo reads them back through :class:`VOCSegmentationDataModule`, so it runs exactly the code a real VOC
download goes through: JPEGs, palette PNGs with the VOC colour map, a void (255) band around every object as the
VOC annotators drew it, split lists, and images of varied, non-square sizes for full-resolution evaluation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from mobilenetv2_dense.tasks.segmentation.data import VOCSegmentationDataModule
from mobilenetv2_dense.tasks.segmentation.transforms import IMAGENET_MEAN, IMAGENET_STD
from mobilenetv2_dense.tasks.segmentation.voc import IGNORE_INDEX, VOC_PALETTE
from mobilenetv2_dense.tasks.synthetic import SHAPE_CLASSES, render_scene

SHAPES_CLASSES = ("background", *SHAPE_CLASSES)
_MARKER, _WRITING = ".shapes_voc_complete", ".shapes_voc_writing"


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


def save_palette_png(labels: np.ndarray, path: str | Path) -> None:
    """Write ``(H, W)`` uint8 labels as a VOC palette PNG (mode ``P``, the VOC colour map)."""
    image = Image.fromarray(labels, mode="P")
    image.putpalette(VOC_PALETTE.ravel().tolist())
    image.save(path)


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


class ShapesVOCDataModule(VOCSegmentationDataModule):
    """Generated shapes in the VOC layout, written under ``root`` on first use and read back through the VOC path
    (``train_split="train"``: there is no SBD). K = 5: background + ``SHAPE_CLASSES``."""

    class_names = SHAPES_CLASSES

    def __init__(self, root: str = "data/shapes_voc", *, num_train: int = 600, num_val: int = 100,
                 image_size: tuple[int, int] = (256, 320), seed: int = 0, crop_size: int = 256,
                 scale_range: tuple[float, float] = (0.5, 2.0), batch_size: int = 16, val_batch_size: int = 8,
                 num_workers: int = 2, mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD, strict: bool = False,
                 persistent_workers: bool = False, predict_images: str | None = None) -> None:
        super().__init__(root, sbd_root=None, train_split="train", crop_size=crop_size, scale_range=scale_range,
                         batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers, mean=mean,
                         std=std, strict=strict, persistent_workers=persistent_workers,
                         predict_images=predict_images)
        self.num_train, self.num_val, self.image_size, self.seed = num_train, num_val, tuple(image_size), seed

    def prepare_data(self) -> None:
        settings = json.dumps({"num_train": self.num_train, "num_val": self.num_val,
                               "image_size": list(self.image_size), "seed": self.seed})
        marker, writing, tree = self.root / _MARKER, self.root / _WRITING, self.root / "VOCdevkit"
        if marker.is_file() and marker.read_text() == settings:
            return
        if tree.exists():
            if not (marker.is_file() or writing.is_file()):
                raise FileExistsError(f"{str(tree)!r} exists but was not written by ShapesVOCDataModule (no "
                                      f"{_MARKER} / {_WRITING} beside it); choose an empty data.root")
            shutil.rmtree(tree)  # half-written, or written with other settings
        marker.unlink(missing_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        writing.write_text(settings)
        print(f"writing the generated shapes VOC dataset to {self.root} ...")
        write_shapes_voc(self.root, num_train=self.num_train, num_val=self.num_val, image_size=self.image_size,
                         seed=self.seed)
        marker.write_text(settings)  # last: a tree without it is rewritten
        writing.unlink()
        super().prepare_data()
