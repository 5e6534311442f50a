"""SSDLite detection: the Lightning task and the data modules for COCO, VOC, YOLO-format data and the generated
shapes (the network is in ``mobilenetv2_dense.models``, the datasets and transforms in
``mobilenetv2_dense.datasets.detection``)."""

from .datamodule import (
    COCODataModule,
    DetectionDataModule,
    ShapesCOCODataModule,
    VOCDetectionDataModule,
    YOLODataModule,
)
from .evaluator import DetectionEvaluator
from .labels import LabelSet
from .module import DetectionTask
from .writer import DetectionPredictionWriter

__all__ = [
    "COCODataModule",
    "DetectionDataModule",
    "DetectionEvaluator",
    "DetectionPredictionWriter",
    "DetectionTask",
    "LabelSet",
    "ShapesCOCODataModule",
    "VOCDetectionDataModule",
    "YOLODataModule",
]
