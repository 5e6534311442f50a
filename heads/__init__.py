"""Plain-PyTorch heads and their pieces: built from channel counts and feature names, never from a backbone."""

if __name__ != "mobilenetv2_dense.heads":  # `import heads` from a checkout would load a second copy
    raise ImportError(f"import mobilenetv2_dense.heads, not {__name__}: this folder is the "
                      "mobilenetv2_dense.heads package (pip install -e . maps it; see pyproject.toml)")

from .anchor_fit import best_possible_recall, fit_anchor_settings
from .anchors import AnchorSettings, box_specs, num_anchors_per_location, ssd_anchors
from .box_coder import BoxCoder
from .deeplab import DeepLabV3Head, DeepLabV3PlusDecoder, ImagePooling, atrous_rates_for
from .loss import SSDLoss, SSDLossSettings
from .matcher import match_anchors
from .postprocess import PostProcessing, postprocess_detections
from .ssdlite import SSDLiteHead

__all__ = [
    "AnchorSettings",
    "BoxCoder",
    "DeepLabV3Head",
    "DeepLabV3PlusDecoder",
    "ImagePooling",
    "PostProcessing",
    "SSDLiteHead",
    "SSDLoss",
    "SSDLossSettings",
    "atrous_rates_for",
    "best_possible_recall",
    "box_specs",
    "fit_anchor_settings",
    "match_anchors",
    "num_anchors_per_location",
    "postprocess_detections",
    "ssd_anchors",
]
