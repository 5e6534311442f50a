"""MobileNetV2 feature extractors with a timm-compatible feature contract."""

if __name__ != "mobilenetv2_dense.backbone":  # `import backbone` from a checkout would load a second copy
    raise ImportError(f"import mobilenetv2_dense.backbone, not {__name__}: this folder is the "
                      "mobilenetv2_dense.backbone package (pip install -e . maps it; see pyproject.toml)")

from .features import FeatureInfo
from .fpn import MobileNetV2WithFPN, mobilenet_v2_fpn
from .mobilenetv2 import InvertedResidual, MobileNetV2, make_divisible, mobilenet_v2
from .settings import BackboneSettings
from .weights import convert_torchvision_state_dict, load_weights

__all__ = [
    "BackboneSettings",
    "FeatureInfo",
    "InvertedResidual",
    "MobileNetV2",
    "MobileNetV2WithFPN",
    "convert_torchvision_state_dict",
    "load_weights",
    "make_divisible",
    "mobilenet_v2",
    "mobilenet_v2_fpn",
]
