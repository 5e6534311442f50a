"""Joint SSDLite detection + DeepLabv3-lite segmentation on one MobileNetV2: the data modules for COCO, VOC and the
generated shapes (the network is in ``mobilenetv2_dense.models.joint``, the datasets in
``mobilenetv2_dense.datasets.joint``)."""

from mobilenetv2_dense.tasks.joint.datamodule import (
    COCOJointDataModule,
    JointData,
    ShapesJointDataModule,
    VOCJointDataModule,
)

__all__ = [
    "COCOJointDataModule",
    "JointData",
    "ShapesJointDataModule",
    "VOCJointDataModule",
]
