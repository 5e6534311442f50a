"""Lightning data modules for VOC segmentation: PASCAL VOC 2012 (+ SBD trainaug) and the generated shapes.

They find the files, build the checked datasets of :mod:`mobilenetv2_dense.datasets.segmentation` in
``setup(stage)`` and leave the loaders to :class:`mobilenetv2_dense.tasks.datamodule.BaseDataModule`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...datasets.segmentation.dataset import (
    SegmentationDataset,
    predict_collate,
    segmentation_collate,
)
from ...datasets.segmentation.shapes import SHAPES_CLASSES, write_shapes_voc
from ...datasets.segmentation.transforms import eval_transforms, train_transforms
from ...datasets.segmentation.voc import (
    VOC_PALETTE,
    VOC_SEGMENTATION_CLASSES,
    Sample,
    find_sbd,
    find_voc2012,
    read_list,
    remove_names,
    trainaug_samples,
    voc_samples,
)
from ..datamodule import BaseDataModule, rank_zero_print, segmentation_predict_sample

_MARKER, _WRITING = ".shapes_voc_complete", ".shapes_voc_writing"


class VOCSegmentationDataModule(BaseDataModule):
    """PASCAL VOC 2012 segmentation: train on ``train`` or ``trainaug`` (with SBD), validate and test on ``val``.

    Batches follow the segmentation contract (:mod:`mobilenetv2_dense.datasets.segmentation.dataset`).

    Args:
        root: folder holding ``VOCdevkit/VOC2012`` (or the ``VOC2012`` folder itself).
        sbd_root: SBD for ``trainaug``: the original release (``dataset/cls/*.mat``) or a folder with the converted
            ``SegmentationClassAug/*.png`` (+ ``train_aug.txt``); ``None`` looks beside VOC.
        train_split: ``"trainaug"`` (10,582 images: SBD train+val + VOC train, minus VOC val) or ``"train"``
            (1,464). The val images are always removed from the training list.
        crop_size: square training crop (DeepLab: 513; 512 here).
        scale_range: random scale factors for training.
        check: run the set-up check (every mask is decoded once); ``False`` trusts the files.
        predict_images: what ``predict`` reads: a folder of images, an image file, a glob or a video file.
        batch_size / val_batch_size: training batch (>= 12 for good BN statistics) / full-resolution evaluation.
        **loader_options: :class:`~mobilenetv2_dense.tasks.datamodule.BaseDataModule`'s (``num_workers``,
            ``pin_memory``, ``persistent_workers``, ``mean``, ``std``, ``strict``).
    """

    class_names: tuple[str, ...] = VOC_SEGMENTATION_CLASSES
    collate = staticmethod(segmentation_collate)
    predict_collate = staticmethod(predict_collate)

    def __init__(self, root: str = "data/voc", *, sbd_root: str | None = None,
                 train_split: Literal["train", "trainaug"] = "trainaug", crop_size: int = 512,
                 scale_range: tuple[float, float] = (0.5, 2.0), check: bool = True, predict_images: str | None = None,
                 batch_size: int = 16, val_batch_size: int = 4, **loader_options: Any) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, **loader_options)
        if train_split not in ("train", "trainaug"):
            raise ValueError(f"train_split={train_split!r}; use 'train' or 'trainaug'")
        self.root, self.sbd_root, self.train_split = Path(root), sbd_root, train_split
        self.crop_size, self.scale_range = crop_size, tuple(scale_range)
        self.check, self.predict_images = check, predict_images

    @property
    def num_classes(self) -> int:
        """K, background included (21 for VOC)."""
        return len(self.class_names)

    @property
    def palette(self) -> np.ndarray:
        """``(256, 3)`` uint8 VOC colour map for writing palette PNGs (index 255 = void)."""
        return VOC_PALETTE

    def prepare_data(self) -> None:
        if self.trainer is not None and self.trainer.predicting:
            return  # predict reads only predict_images
        find_voc2012(self.root)  # fail before any worker starts, with the expected layout in the message

    def train_samples(self) -> tuple[list[Sample], int]:
        """The training list before the set-up check, and how many val images were removed from it."""
        voc_dir = find_voc2012(self.root)
        if self.train_split == "trainaug":
            sbd = find_sbd(self.sbd_root, voc_dir)
            rank_zero_print(f"trainaug: VOC train + {len(sbd.names)} SBD names from {sbd.description}")
            samples = trainaug_samples(voc_dir, sbd)
        else:
            samples = voc_samples(voc_dir, "train")
        val_names = read_list(voc_dir / "ImageSets" / "Segmentation" / "val.txt")
        samples, removed = remove_names(samples, val_names)
        rank_zero_print(f"{self.train_split}: removed {removed} images of the val list from the training list "
              f"({len(samples)} left)")
        return samples, removed

    def setup(self, stage: str) -> None:
        voc_dir = find_voc2012(self.root) if stage != "predict" else None
        if stage == "fit" and self.train_dataset is None:
            samples, removed = self.train_samples()
            transform = train_transforms(crop_size=self.crop_size, scale_range=self.scale_range, mean=self.mean,
                                         std=self.std)
            self.train_dataset = SegmentationDataset(
                samples, transform, num_classes=self.num_classes, name=f"VOC {self.train_split} {voc_dir}",
                strict=self.strict, check=self.check, counts={"val images removed": removed})
        if stage in ("fit", "validate", "test") and self.val_dataset is None:
            self.val_dataset = SegmentationDataset(
                voc_samples(voc_dir, "val"), eval_transforms(mean=self.mean, std=self.std),
                num_classes=self.num_classes, name=f"VOC val {voc_dir}", strict=self.strict, check=self.check)
        if stage == "predict" and self.predict_dataset is None:
            self.predict_dataset = self.predict_images_dataset(
                self.predict_images, segmentation_predict_sample(eval_transforms(mean=self.mean, std=self.std)))


class ShapesVOCDataModule(VOCSegmentationDataModule):
    """Generated shapes in the VOC layout (:func:`mobilenetv2_dense.datasets.segmentation.shapes.write_shapes_voc`),
    written under ``root`` on first use and read back through the VOC path (``train_split="train"``: there is no
    SBD). K = 5: background + ``SHAPE_CLASSES``. ``**options``: :class:`VOCSegmentationDataModule`'s (``scale_range``,
    ``batch_size``, ...) and the loader options."""

    class_names = SHAPES_CLASSES

    def __init__(self, root: str = "data/shapes_voc", *, num_train: int = 600, num_val: int = 100,
                 image_size: tuple[int, int] = (256, 320), seed: int = 0, crop_size: int = 256,
                 val_batch_size: int = 8, num_workers: int = 2, **options: Any) -> None:
        super().__init__(root, sbd_root=None, train_split="train", crop_size=crop_size, val_batch_size=val_batch_size,
                         num_workers=num_workers, **options)
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
        rank_zero_print(f"writing the generated shapes VOC dataset to {self.root} ...")
        write_shapes_voc(self.root, num_train=self.num_train, num_val=self.num_val, image_size=self.image_size,
                         seed=self.seed)
        marker.write_text(settings)  # last: a tree without it is rewritten
        writing.unlink()
        super().prepare_data()
