"""Plain-PyTorch heads and their pieces: built from channel counts and feature names, never from a backbone."""

from heads.anchors import box_specs, num_anchors_per_location, ssd_anchors
from heads.box_coder import BoxCoder
from heads.deeplab import DeepLabV3Head, DeepLabV3PlusDecoder, ImagePooling, atrous_rates_for
from heads.loss import SSDLoss
from heads.matcher import match_anchors
from heads.postprocess import postprocess_detections
from heads.ssdlite import SSDLiteHead

__all__ = [
    "BoxCoder",
    "DeepLabV3Head",
    "DeepLabV3PlusDecoder",
    "ImagePooling",
    "SSDLiteHead",
    "SSDLoss",
    "atrous_rates_for",
    "box_specs",
    "match_anchors",
    "num_anchors_per_location",
    "postprocess_detections",
    "ssd_anchors",
]
