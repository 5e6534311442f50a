"""Segmentation data: PASCAL VOC 2012 (+ SBD trainaug) on disk, the checked dataset and the batch contract
(``segmentation_collate``), DeepLab's augmentation, and the generated shapes written in the VOC layout."""

from .dataset import (
    ImageFolderPredictDataset,
    SegmentationDataset,
    predict_collate,
    segmentation_collate,
)
from .shapes import SHAPES_CLASSES, write_shapes_voc
from .transforms import eval_transforms, train_transforms
from .voc import (
    IGNORE_INDEX,
    VOC_PALETTE,
    VOC_SEGMENTATION_CLASSES,
    MaskError,
    read_mask,
    rgb_to_index,
    save_palette_png,
    voc_palette,
)

__all__ = [
    "IGNORE_INDEX",
    "ImageFolderPredictDataset",
    "MaskError",
    "SHAPES_CLASSES",
    "SegmentationDataset",
    "VOC_PALETTE",
    "VOC_SEGMENTATION_CLASSES",
    "eval_transforms",
    "predict_collate",
    "read_mask",
    "rgb_to_index",
    "save_palette_png",
    "segmentation_collate",
    "train_transforms",
    "voc_palette",
    "write_shapes_voc",
]
