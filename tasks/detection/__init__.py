"""SSDLite detection: COCO and VOC data, box-safe augmentation, the network and its Lightning task."""

from tasks.detection.coco import COCODetection, load_coco
from tasks.detection.data import DetectionDataset, DetectionIndex, ImageFolderDetection, build_index, detection_collate
from tasks.detection.datamodule import COCODataModule, DetectionDataModule, VOCDetectionDataModule
from tasks.detection.model import SSDLite
from tasks.detection.module import DetectionTask
from tasks.detection.shapes import ShapesCOCODataModule, write_shapes_coco
from tasks.detection.transforms import (
    DetectionAugment,
    DetectionTransform,
    MinIoURandomCrop,
    ZoomOut,
    eval_transform,
    train_transform,
)
from tasks.detection.voc import VOC_CLASSES, VOCAnnotation, VOCDetection, parse_voc_xml

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
    "SSDLite",
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
