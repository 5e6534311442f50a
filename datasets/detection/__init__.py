"""Detection data: COCO-format, PASCAL VOC and YOLO-format datasets over one checked index, the batch contract
(``detection_collate``), SSD's box-safe augmentation, and the generated shapes written as COCO."""

from .coco import COCODetection, load_coco
from .dataset import (
    DetectionDataset,
    DetectionIndex,
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
from .yolo import YOLODataConfig, YOLODetection, label_path, read_data_yaml

__all__ = [
    "COCODetection",
    "DetectionAugment",
    "DetectionDataset",
    "DetectionIndex",
    "DetectionTransform",
    "MinIoURandomCrop",
    "VOCAnnotation",
    "VOCDetection",
    "VOC_CLASSES",
    "YOLODataConfig",
    "YOLODetection",
    "ZoomOut",
    "build_index",
    "detection_collate",
    "eval_transform",
    "label_path",
    "load_coco",
    "parse_voc_xml",
    "read_data_yaml",
    "train_transform",
    "write_shapes_coco",
]
