"""Plain-PyTorch heads and their pieces: built from channel counts and feature names, never from a backbone."""

from mobilenetv2_dense.heads.anchor_fit import best_possible_recall, fit_anchor_settings
from mobilenetv2_dense.heads.anchors import box_specs, num_anchors_per_location, ssd_anchors
from mobilenetv2_dense.heads.box_coder import BoxCoder
from mobilenetv2_dense.heads.deeplab import DeepLabV3Head, DeepLabV3PlusDecoder, ImagePooling, atrous_rates_for
from mobilenetv2_dense.heads.loss import SSDLoss
from mobilenetv2_dense.heads.matcher import match_anchors
from mobilenetv2_dense.heads.postprocess import postprocess_detections
from mobilenetv2_dense.heads.ssdlite import SSDLiteHead

__all__ = [
    "BoxCoder",
    "DeepLabV3Head",
    "DeepLabV3PlusDecoder",
    "ImagePooling",
    "SSDLiteHead",
    "SSDLoss",
    "atrous_rates_for",
    "best_possible_recall",
    "box_specs",
    "fit_anchor_settings",
    "match_anchors",
    "num_anchors_per_location",
    "postprocess_detections",
    "ssd_anchors",
]
