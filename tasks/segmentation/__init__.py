"""DeepLabv3 semantic segmentation on PASCAL VOC 2012 (trainaug from SBD) and the generated shapes scenes: the
Lightning task and the data modules (the network is in ``mobilenetv2_dense.models``, the datasets and transforms in
``mobilenetv2_dense.datasets.segmentation``)."""

from .datamodule import ShapesVOCDataModule, VOCSegmentationDataModule
from .evaluation import SegmentationEvaluation, SegmentationEvaluator
from .loss import SegmentationLoss, SegmentationLossSettings
from .module import SegmentationTask
from .writer import SegmentationPredictionWriter

__all__ = [
    "SegmentationEvaluation",
    "SegmentationEvaluator",
    "SegmentationLoss",
    "SegmentationLossSettings",
    "SegmentationPredictionWriter",
    "SegmentationTask",
    "ShapesVOCDataModule",
    "VOCSegmentationDataModule",
]
