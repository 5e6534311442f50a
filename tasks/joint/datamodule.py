"""Lightning data modules for joint detection + segmentation: COCO 2017, PASCAL VOC 2012 and the generated shapes.

Each is its detection data module (``tasks/detection/datamodule.py``: the same images, boxes, ``num_classes``,
``class_names``, ``label_to_cat_id``, ``val_coco`` and COCO evaluation) whose items also carry the semantic mask
(``datasets/joint``), augmented with the image and its boxes. They add the segmentation side's class count and
names: ``num_seg_classes = num_classes + 1`` (background first, then the detector's classes in label order, so
segmentation label k is detection label k) and ``seg_class_names``. The CLI links both counts to the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...datasets.detection.dataset import Transform
from ...datasets.joint.coco import COCOJoint
from ...datasets.joint.transforms import joint_eval_transform, joint_train_transform
from ...datasets.joint.voc import VOCJoint
from ...datasets.segmentation.voc import VOC_PALETTE
from ..detection.datamodule import (
    COCODataModule,
    ShapesCOCODataModule,
    VOCDetectionDataModule,
)


class JointData:
    """Mixin before a detection data module: masks in the items, the segmentation class set, joint transforms."""

    @property
    def num_seg_classes(self) -> int:
        """K_seg = K + 1: the background and the detector's K classes."""
        return self.num_classes + 1

    @property
    def seg_class_names(self) -> list[str]:
        return ["background", *self.class_names]

    @property
    def palette(self) -> np.ndarray:
        """``(256, 3)`` uint8 colours of the segmentation labels in pictures (VOC's colour map; 255 = void)."""
        return VOC_PALETTE

    def train_transform(self) -> Transform:
        return joint_train_transform(image_size=self.image_size, mean=self.mean, std=self.std, augment=self.augment)

    def eval_transform(self) -> Transform:
        return joint_eval_transform(image_size=self.image_size, mean=self.mean, std=self.std)


class COCOJointDataModule(JointData, COCODataModule):
    """COCO 2017 (or COCO-format data with ``segmentation``) as boxes + semantic masks of the 80 categories; the
    arguments are :class:`~mobilenetv2_dense.tasks.detection.COCODataModule`'s."""

    dataset_class = COCOJoint


class VOCJointDataModule(JointData, VOCDetectionDataModule):
    """PASCAL VOC 2012 restricted to the images with both an annotation and a mask (1,464 train, 1,449 val;
    :class:`~mobilenetv2_dense.datasets.joint.VOCJoint`). ``root`` is the ``VOCdevkit`` folder, ``train_sets`` and
    ``val_set`` ``"VOC2012/<split>"`` names of ``ImageSets/Segmentation`` lists; other arguments are
    :class:`~mobilenetv2_dense.tasks.detection.VOCDetectionDataModule`'s."""

    dataset_class = VOCJoint

    def __init__(self, root: str, *, train_sets: tuple[str, ...] = ("VOC2012/train",), val_set: str = "VOC2012/val",
                 **options: Any) -> None:
        super().__init__(root, train_sets=train_sets, val_set=val_set, **options)

    def prepare_data(self) -> None:
        """Only checks that each set has a list (VOC is not downloaded here)."""
        for name in (*self.train_sets, self.val_set):
            folder, _, split = name.rpartition("/")
            lists = [self.root / folder / "ImageSets" / kind / f"{split}.txt" for kind in ("Segmentation", "Main")]
            if not any(path.is_file() for path in lists):
                raise FileNotFoundError(f"VOCJointDataModule: neither {str(lists[0])!r} nor {str(lists[1])!r} found "
                                        f"for set {name!r}; expected root = VOCdevkit with the VOC2012 layout")


class ShapesJointDataModule(JointData, ShapesCOCODataModule):
    """The generated shapes of :class:`~mobilenetv2_dense.tasks.detection.ShapesCOCODataModule` (its COCO json
    carries each shape's visible pixels as an RLE ``segmentation``) read back through :class:`COCOJoint`, as COCO
    2017 is: with the same arguments it reads the very files ``make demo`` writes."""

    dataset_class = COCOJoint


__all__ = ["COCOJointDataModule", "JointData", "ShapesJointDataModule", "VOCJointDataModule"]
