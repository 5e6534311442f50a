"""DeepLabv3 semantic segmentation on PASCAL VOC 2012 (trainaug from SBD) and the generated shapes scenes: the
network, its Lightning task and the data modules (the datasets and transforms are in
``mobilenetv2_dense.datasets.segmentation``)."""

from mobilenetv2_dense.tasks.segmentation.datamodule import ShapesVOCDataModule, VOCSegmentationDataModule
from mobilenetv2_dense.tasks.segmentation.model import DeepLabV3
from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask
from mobilenetv2_dense.tasks.segmentation.smp_encoder import register_smp_encoder

# Makes ``smp`` encoder names ``mnv2_dense*`` resolve to this backbone.
register_smp_encoder()

__all__ = [
    "DeepLabV3",
    "SegmentationTask",
    "ShapesVOCDataModule",
    "VOCSegmentationDataModule",
    "register_smp_encoder",
]
