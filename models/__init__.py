"""The model floor: backbone + head assembled into plain ``nn.Module``s, with keyword-only builders.

No Lightning, albumentations, pycocotools or torchmetrics here (``tests/models/test_floor.py``): export and other
projects use these bare. Each model takes its backbone as an argument, returns its raw outputs from ``forward``
(what the losses take) and turns them into results with ``postprocess`` (``predict`` does both):

- ``ssdlite320_mobilenet_v2`` -> :class:`SSDLite`: ``forward`` gives ``{"bbox_regression": (N, A, 4),
  "cls_logits": (N, A, K + 1), "anchors": (A, 4)}``, ``predict`` ``[{"boxes", "scores", "labels"}]`` per image;
- ``deeplabv3_mobilenet_v2`` -> :class:`DeepLabV3`: ``{"out": (N, K, H, W)}``, ``predict`` ``(N, H, W)`` int64
  label maps;
- ``ssdlite_deeplabv3_mobilenet_v2`` -> :class:`SSDLiteDeepLabV3`: both heads on one backbone forward, the
  detector's three outputs plus ``"out": (N, K_seg, H, W)``; ``postprocess`` gives the detections, ``predict``
  ``{"detections", "seg_labels"}``;
- ``mobilenet_v2_classifier`` -> :class:`mobilenetv2_dense.backbone.MobileNetV2` with its classifier:
  ``{"logits": (N, K)}``.

Every builder's ``weights=`` loads a checkpoint of this project (a task's Lightning ``.ckpt`` or a state_dict
file) with :func:`load_checkpoint_weights`.
"""

if __name__ != "mobilenetv2_dense.models":  # `import models` from a checkout would load a second copy
    raise ImportError(f"import mobilenetv2_dense.models, not {__name__}: this folder is the "
                      "mobilenetv2_dense.models package (pip install -e . maps it; see pyproject.toml)")

from .classifier import mobilenet_v2_classifier
from .deeplab import DeepLabV3, deeplabv3_mobilenet_v2
from .joint import SSDLiteDeepLabV3, ssdlite_deeplabv3_mobilenet_v2
from .ssdlite import SSDLite, ssdlite320_mobilenet_v2
from .weights import checkpoint_state_dict, load_checkpoint_weights

__all__ = [
    "DeepLabV3",
    "SSDLite",
    "SSDLiteDeepLabV3",
    "checkpoint_state_dict",
    "deeplabv3_mobilenet_v2",
    "load_checkpoint_weights",
    "mobilenet_v2_classifier",
    "ssdlite320_mobilenet_v2",
    "ssdlite_deeplabv3_mobilenet_v2",
]
