"""DeepLabv3 semantic segmentation on PASCAL VOC 2012 (trainaug from SBD) and the generated shapes scenes: the
Lightning task and the data modules (the network is in ``mobilenetv2_dense.models``, the datasets and transforms in
``mobilenetv2_dense.datasets.segmentation``). smp encoders are registered by calling ``register_smp_encoder()``."""

from .datamodule import ShapesVOCDataModule, VOCSegmentationDataModule
from .module import SegmentationTask
from .smp_encoder import register_smp_encoder

__all__ = [
    "SegmentationTask",
    "ShapesVOCDataModule",
    "VOCSegmentationDataModule",
    "register_smp_encoder",
]
