"""Joint SSDLite detection + DeepLabv3-lite segmentation on one MobileNetV2: the Lightning task, the data modules for
COCO, VOC and the generated shapes, and the prediction writer (the network is in ``mobilenetv2_dense.models.joint``,
the datasets in ``mobilenetv2_dense.datasets.joint``)."""

from .datamodule import (
    COCOJointDataModule,
    JointData,
    ShapesJointDataModule,
    VOCJointDataModule,
)
from .loss import JointLoss, LossWeights
from .module import JointTask
from .writer import JointPredictionWriter

__all__ = [
    "COCOJointDataModule",
    "JointData",
    "JointLoss",
    "JointPredictionWriter",
    "JointTask",
    "LossWeights",
    "ShapesJointDataModule",
    "VOCJointDataModule",
]
