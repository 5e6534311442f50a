"""DeepLabv3 semantic segmentation on PASCAL VOC 2012 (trainaug from SBD) and the generated shapes scenes."""

from mobilenetv2_dense.tasks.segmentation.data import (
    ImageFolderPredictDataset,
    SegmentationDataset,
    VOCSegmentationDataModule,
    predict_collate,
    segmentation_collate,
)
from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask
from mobilenetv2_dense.tasks.segmentation.shapes import SHAPES_CLASSES, ShapesVOCDataModule, write_shapes_voc
from mobilenetv2_dense.tasks.segmentation.smp_encoder import register_smp_encoder
from mobilenetv2_dense.tasks.segmentation.transforms import eval_transforms, train_transforms
from mobilenetv2_dense.tasks.segmentation.voc import (
    VOC_CLASSES,
    VOC_PALETTE,
    MaskError,
    read_mask,
    rgb_to_index,
    voc_palette,
)

__all__ = [
    "ImageFolderPredictDataset",
    "MaskError",
    "SHAPES_CLASSES",
    "SegmentationDataset",
    "SegmentationTask",
    "ShapesVOCDataModule",
    "VOCSegmentationDataModule",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "eval_transforms",
    "predict_collate",
    "read_mask",
    "register_smp_encoder",
    "rgb_to_index",
    "segmentation_collate",
    "train_transforms",
    "voc_palette",
    "write_shapes_voc",
]
