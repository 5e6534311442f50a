"""Segmentation data: PASCAL VOC 2012 (+ SBD trainaug), Cityscapes, ADE20K and any image / mask folders on disk,
the mask formats (index, id table, colour table), the checked dataset and the batch contract
(``segmentation_collate``), DeepLab's augmentation, and the generated shapes written in the VOC layout."""

from .ade20k import ADE20K_CLASSES, ade20k_decoder, ade20k_samples, find_ade20k
from .cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABEL_TO_TRAIN_ID,
    cityscapes_decoder,
    cityscapes_samples,
    find_cityscapes,
)
from .classes import ClassTable, class_table, read_class_file
from .dataset import (
    SegmentationDataset,
    predict_collate,
    segmentation_collate,
)
from .folders import folder_samples, pair_files
from .masks import MaskDecoder
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
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_TO_TRAIN_ID",
    "IGNORE_INDEX",
    "ClassTable",
    "MaskDecoder",
    "MaskError",
    "SHAPES_CLASSES",
    "SegmentationDataset",
    "VOC_PALETTE",
    "VOC_SEGMENTATION_CLASSES",
    "ade20k_decoder",
    "ade20k_samples",
    "cityscapes_decoder",
    "cityscapes_samples",
    "class_table",
    "eval_transforms",
    "find_ade20k",
    "find_cityscapes",
    "folder_samples",
    "pair_files",
    "predict_collate",
    "read_class_file",
    "read_mask",
    "rgb_to_index",
    "save_palette_png",
    "segmentation_collate",
    "train_transforms",
    "voc_palette",
    "write_shapes_voc",
]
