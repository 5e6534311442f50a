"""SSDLite detection: the network, its Lightning task and the data modules for COCO, VOC and the generated shapes
(the datasets and transforms are in ``mobilenetv2_dense.datasets.detection``)."""

from mobilenetv2_dense.tasks.detection.datamodule import (
    COCODataModule,
    DetectionDataModule,
    ShapesCOCODataModule,
    VOCDetectionDataModule,
)
from mobilenetv2_dense.tasks.detection.model import SSDLite
from mobilenetv2_dense.tasks.detection.module import DetectionTask

__all__ = [
    "COCODataModule",
    "DetectionDataModule",
    "DetectionTask",
    "SSDLite",
    "ShapesCOCODataModule",
    "VOCDetectionDataModule",
]
