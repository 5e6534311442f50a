"""Detection data: COCO-format and PASCAL VOC datasets over one checked index, the batch contract
(``detection_collate``), SSD's box-safe augmentation, and the generated shapes written as COCO."""

from .coco import COCODetection, load_coco
from .dataset import (
    DetectionDataset,
    DetectionIndex,
    ImageFolderDetection,
    build_index,
    detection_collate,
)
from .shapes import write_shapes_coco
from .transforms import (
    DetectionAugment,
    DetectionTransform,
    MinIoURandomCrop,
    ZoomOut,
    eval_transform,
    train_transform,
)
from .voc import VOC_CLASSES, VOCAnnotation, VOCDetection, parse_voc_xml

__all__ = [
    "COCODetection",
    "DetectionAugment",
    "DetectionDataset",
    "DetectionIndex",
    "DetectionTransform",
    "ImageFolderDetection",
    "MinIoURandomCrop",
    "VOCAnnotation",
    "VOCDetection",
    "VOC_CLASSES",
    "ZoomOut",
    "build_index",
    "detection_collate",
    "eval_transform",
    "load_coco",
    "parse_voc_xml",
    "train_transform",
    "write_shapes_coco",
]
