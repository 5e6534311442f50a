"""SSDLite detection: COCO and VOC data, box-safe augmentation, the network and its Lightning task."""

from mobilenetv2_dense.tasks.detection.coco import COCODetection, load_coco
from mobilenetv2_dense.tasks.detection.data import (
    DetectionDataset,
    DetectionIndex,
    ImageFolderDetection,
    build_index,
    detection_collate,
)
from mobilenetv2_dense.tasks.detection.datamodule import COCODataModule, DetectionDataModule, VOCDetectionDataModule
from mobilenetv2_dense.tasks.detection.module import DetectionTask
from mobilenetv2_dense.tasks.detection.shapes import ShapesCOCODataModule, write_shapes_coco
from mobilenetv2_dense.tasks.detection.transforms import (
    DetectionAugment,
    DetectionTransform,
    MinIoURandomCrop,
    ZoomOut,
    eval_transform,
    train_transform,
)
from mobilenetv2_dense.tasks.detection.voc import VOC_CLASSES, VOCAnnotation, VOCDetection, parse_voc_xml

__all__ = [
    "COCODataModule",
    "COCODetection",
    "DetectionAugment",
    "DetectionDataModule",
    "DetectionDataset",
    "DetectionIndex",
    "DetectionTask",
    "DetectionTransform",
    "ImageFolderDetection",
    "MinIoURandomCrop",
    "ShapesCOCODataModule",
    "VOCAnnotation",
    "VOCDetection",
    "VOCDetectionDataModule",
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
