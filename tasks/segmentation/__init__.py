"""DeepLabv3 semantic segmentation on PASCAL VOC 2012 (trainaug from SBD), Cityscapes, ADE20K, your own image /
mask folders and the generated shapes scenes: the Lightning task and the data modules (the network is in
``mobilenetv2_dense.models``, the datasets and transforms in ``mobilenetv2_dense.datasets.segmentation``)."""

from .datamodule import (
    ADE20KDataModule,
    CityscapesDataModule,
    SegmentationFilesDataModule,
    SegmentationFolderDataModule,
    ShapesVOCDataModule,
    VOCSegmentationDataModule,
)
from .evaluation import SegmentationEvaluation, SegmentationEvaluator
from .loss import SegmentationLoss, SegmentationLossSettings
from .module import SegmentationTask
from .writer import SegmentationPredictionWriter

__all__ = [
    "ADE20KDataModule",
    "CityscapesDataModule",
    "SegmentationEvaluation",
    "SegmentationEvaluator",
    "SegmentationFilesDataModule",
    "SegmentationFolderDataModule",
    "SegmentationLoss",
    "SegmentationLossSettings",
    "SegmentationPredictionWriter",
    "SegmentationTask",
    "ShapesVOCDataModule",
    "VOCSegmentationDataModule",
]
