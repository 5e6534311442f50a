"""MobileNetV2 feature extractors with a timm-compatible feature contract."""

from mobilenetv2_dense.backbone.features import FeatureInfo
from mobilenetv2_dense.backbone.mobilenetv2 import InvertedResidual, MobileNetV2, make_divisible, mobilenet_v2
from mobilenetv2_dense.backbone.weights import convert_torchvision_state_dict, load_weights

__all__ = [
    "FeatureInfo",
    "InvertedResidual",
    "MobileNetV2",
    "convert_torchvision_state_dict",
    "load_weights",
    "make_divisible",
    "mobilenet_v2",
]
