"""DeepLabv3 semantic segmentation on PASCAL VOC 2012 (trainaug from SBD) and the generated shapes scenes."""

from tasks.segmentation.data import (
    ImageFolderPredictDataset,
    SegmentationDataset,
    VOCSegmentationDataModule,
    predict_collate,
    segmentation_collate,
)
from tasks.segmentation.shapes import SHAPES_CLASSES, ShapesVOCDataModule, write_shapes_voc
from tasks.segmentation.transforms import eval_transforms, train_transforms
from tasks.segmentation.voc import VOC_CLASSES, VOC_PALETTE, MaskError, read_mask, rgb_to_index, voc_palette

__all__ = [
    "SHAPES_CLASSES",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "ImageFolderPredictDataset",
    "MaskError",
    "SegmentationDataset",
    "ShapesVOCDataModule",
    "VOCSegmentationDataModule",
    "eval_transforms",
    "predict_collate",
    "read_mask",
    "rgb_to_index",
    "segmentation_collate",
    "train_transforms",
    "voc_palette",
    "write_shapes_voc",
]
