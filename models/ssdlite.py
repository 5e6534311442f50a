"""MobileNetV2 + SSDLite, the detector of the MobileNetV2 paper (Sec. 6.2, Tables 5 and 6).

Parameter and MAdds budget of ``ssdlite320_mobilenet_v2(num_classes=80)`` at 320x320, counted with
``mobilenetv2_dense.backbone.complexity`` (checked in ``tests/models/test_detection_model.py``):

============================  ==========  ==========  ======================
part                          params      MAdds       paper (Tables 5, 6)
============================  ==========  ==========  ======================
backbone (stem .. 1280 conv)  2.224M      0.611B
SSDLite head (K + 1 = 81)     2.113M      0.178B      2.1M / 0.35B
whole model                   4.337M      0.789B      4.3M / 0.8B
============================  ==========  ==========  ======================

The backbone is torchvision's ``mobilenet_v2`` without its classifier (3.505M - 1.281M); everything up to the
1280 layer is built, since the second tap needs it. The head's 0.178B MAdds are half the paper's 0.35B, yet the
paper's own total agrees with ours: 0.611B + 0.35B would give 0.96B, not 0.8B, while 0.611B + 0.178B = 0.79B.
The same counter gives SSD's 1.25B for the regular-conv head (20x20x576 and 10x10x1280 maps with 3x3 predictors:
~1.19B, extras ~0.07B), so the counting is not the cause; the paper's 0.35B head figure is the odd one out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ..backbone import MobileNetV2, mobilenet_v2
from ..heads.anchors import AnchorSettings, num_anchors_per_location, ssd_anchors
from ..heads.box_coder import BoxCoder
from ..heads.postprocess import PostProcessing, postprocess_detections
from ..heads.ssdlite import SSDLiteHead, SSDLiteNorm
from .weights import load_checkpoint_weights

# The paper's taps: the layer-15 expansion (stride 16) and the 1280 layer (stride 32).
TAPS = ("stage6_expansion", "conv_head")


class SSDLite(nn.Module):
    """SSDLite on a feature backbone: :class:`mobilenetv2_dense.heads.ssdlite.SSDLiteHead` on every feature the
    backbone returns, TF SSD anchors, box coding and post-processing (paper Sec. 6.2).

    ``forward(images (N, 3, H, W))`` returns ``{"bbox_regression": (N, A, 4), "cls_logits": (N, A, K + 1),
    "anchors": (A, 4)}``, anchors xyxy in input pixels for that H, W (cached per input size), the outputs the loss
    (:class:`mobilenetv2_dense.heads.loss.SSDLoss`) takes. ``A`` is 2034 at 320x320 (maps 20, 10, 5, 3, 2, 1 with
    3, 6, 6, 6, 6, 6 anchors per cell). :meth:`postprocess` turns them into detections; :meth:`predict` does both.

    Args:
        backbone: a :class:`mobilenetv2_dense.backbone.MobileNetV2` built with the taps as ``out_features``
            (paper: ``["stage6_expansion", "conv_head"]``); its ``out_feature_info`` gives the head's channels.
        taps: the backbone features the head sits on, in network order; ``None``: every feature the backbone
            returns. A backbone that also feeds another head (``models/joint.py``) returns more than the taps.
        num_classes: K object classes (80 for COCO, 20 for VOC); labels 1..K, 0 is background.
        extra_channels: outputs of the extra stride-2 layers after the last tap.
        anchors: the default-box generator's values (:class:`mobilenetv2_dense.heads.AnchorSettings`; TF's by
            default), changed later by anchors fitted to a dataset (:meth:`set_anchor_settings`).
        norm_layer: the head's norm layer (TF's SSDLite batch norm, eps 1e-3, momentum 0.03).
        classification: how the scores come from ``cls_logits``: ``"softmax"`` over K + 1, or ``"focal"`` (a
            sigmoid of the K object logits) for a model trained with the focal loss.
        post_processing: score threshold, top-k candidates, per-class NMS and detections kept
            (:class:`mobilenetv2_dense.heads.PostProcessing`).
    """

    def __init__(
        self,
        backbone: MobileNetV2,
        *,
        num_classes: int,
        taps: Sequence[str] | None = None,
        extra_channels: Sequence[int] = (512, 256, 256, 128),
        anchors: AnchorSettings = AnchorSettings(),
        norm_layer: Callable[..., nn.Module] = SSDLiteNorm,
        classification: Literal["softmax", "focal"] = "softmax",
        post_processing: PostProcessing = PostProcessing(),
    ) -> None:
        super().__init__()
        if classification not in ("softmax", "focal"):
            raise ValueError(f"SSDLite: classification must be 'softmax' or 'focal', got {classification!r}")
        # network order, so the stride-16 tap comes first
        tap_info = backbone.out_feature_info if taps is None else backbone.out_feature_info.select(taps)
        self.backbone = backbone
        self.anchor_settings = anchors
        num_anchors = num_anchors_per_location(anchors, num_layers=len(tap_info.names) + len(extra_channels))
        self.head = SSDLiteHead(in_channels=dict(zip(tap_info.names, tap_info.channels())), num_classes=num_classes,
                                num_anchors=num_anchors, extra_channels=extra_channels, norm_layer=norm_layer)
        self.tap_reductions = [int(r) for r in tap_info.reduction()]  # strides of the taps, not of every feature
        self.num_classes = num_classes
        self.box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.classification = classification
        self.post_processing = post_processing
        self._anchor_cache: dict[tuple, Tensor] = {}

    def anchors(self, image_size: tuple[int, int], feature_sizes: list[tuple[int, int]], *,
                device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(A, 4)`` xyxy pixel anchors for an input of ``image_size`` whose maps have ``feature_sizes``."""
        key = (tuple(image_size), tuple(feature_sizes), str(device), dtype)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = ssd_anchors(feature_sizes, image_size, self.anchor_settings, device=device,
                                                  dtype=dtype)
        return self._anchor_cache[key]

    def feature_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """``(H_l, W_l)`` of every map the head predicts on for an ``image_size = (H, W)`` input, from the taps'
        strides (every stride-2 conv, 3x3 with padding 1, gives ``ceil(n / 2)``): no forward pass."""
        height, width = image_size
        sizes = [(math.ceil(height / r), math.ceil(width / r)) for r in self.tap_reductions]
        for _ in self.head.extra:
            sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
        return sizes

    def set_anchor_settings(self, settings: AnchorSettings) -> None:
        """Change the anchor values, e.g. to ones fitted to a dataset; the anchors per location, hence the head's
        conv shapes and any trained weights, must stay as they are."""
        counts = num_anchors_per_location(settings, num_layers=len(self.head.num_anchors))
        if counts != self.head.num_anchors:
            raise ValueError(f"SSDLite.set_anchor_settings: these anchor settings give {counts} anchors per location, "
                             f"the head predicts {self.head.num_anchors}; keep the number of aspect ratios (and "
                             "lowest-layer boxes) as they are")
        self.anchor_settings = settings
        self._anchor_cache.clear()

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        check_images(images)
        return self.detector_outputs(self.backbone(images), tuple(images.shape[-2:]))

    def detector_outputs(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> dict[str, Tensor]:
        """The head on the backbone's ``features`` of an ``image_size = (H, W)`` input: :meth:`forward`'s dict."""
        out = self.head(features)
        feature_sizes = out.pop("feature_sizes")
        out["anchors"] = self.anchors(tuple(image_size), feature_sizes, device=out["cls_logits"].device)
        return out

    def postprocess(self, outputs: dict[str, Tensor], image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """:meth:`forward`'s outputs for an input of ``image_size = (H, W)`` -> detections per image:
        ``[{"boxes": (D, 4) xyxy input pixels, "scores": (D,), "labels": (D,) int64 in 1..K}]``, best first.

        Scores, top-k candidates, decoding, clipping to the image and per-class NMS with this model's settings
        (:func:`mobilenetv2_dense.heads.postprocess.postprocess_detections`).
        """
        return postprocess_detections(
            outputs["bbox_regression"], outputs["cls_logits"], outputs["anchors"], self.box_coder,
            image_size=tuple(image_size), settings=self.post_processing, classification=self.classification)

    @torch.no_grad()
    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        """``images (N, 3, H, W)`` -> :meth:`postprocess`'s detections in input pixels (call ``eval()`` first)."""
        return self.postprocess(self(images), tuple(images.shape[-2:]))


def check_images(images: Tensor) -> None:
    """Raise unless ``images`` is an ``(N, 3, H, W)`` batch."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"check_images: expected images (N, 3, H, W), got {tuple(images.shape)}; "
                         "stack the images of a batch into one tensor (torch.stack)")


def ssdlite320_mobilenet_v2(
    *,
    num_classes: int,
    width_mult: float = 1.0,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    taps: Sequence[str] = TAPS,
    backbone_init: Literal["normal", "kaiming"] = "normal",
    **kwargs,
) -> SSDLite:
    """MobileNetV2 + SSDLite, the detector of the MobileNetV2 paper (320x320 inputs, Tables 5 and 6).

    Args:
        num_classes: K object classes (80 for COCO, 20 for VOC).
        width_mult: MobileNetV2 width multiplier alpha.
        weights: a checkpoint of this project (a task's Lightning ``.ckpt`` or a state_dict file) holding every
            weight; see :func:`mobilenetv2_dense.models.load_checkpoint_weights`. ``backbone_weights`` is then
            not read.
        backbone_weights: torchvision ``mobilenet_v2`` state_dict file or weights name (see ``mobilenet_v2``).
        frozen_stages: backbone stages to freeze (-1: none); their BN statistics stay frozen too.
        norm_eval: keep every backbone BatchNorm's running statistics frozen while training (small batches on
            ImageNet weights); their affine parameters still train.
        taps: the backbone features the head sits on, in network order (paper: layer-15 expansion, stride 16; the
            1280 layer).
        backbone_init: the backbone's random init when no weights are given: ``"normal"``, N(0, 0.03) (TF's SSDLite
            configs, torchvision's ``ssdlite320`` from scratch) or ``"kaiming"`` (see
            :class:`mobilenetv2_dense.backbone.MobileNetV2`'s ``init``).
        **kwargs: :class:`SSDLite`'s settings (``extra_channels``, anchors, ``classification``, post-processing).

    Example::

        model = ssdlite320_mobilenet_v2(num_classes=80, weights="best.ckpt").eval()
        detections = model.predict(torch.rand(1, 3, 320, 320))  # [{"boxes": (D, 4), "scores", "labels"}]
    """
    if len(set(taps)) != len(taps):
        raise ValueError(f"ssdlite320_mobilenet_v2: taps {tuple(taps)} name the same feature twice; "
                         "pass two different features, e.g. ('stage6_expansion', 'conv_head')")
    # TF's SSDLite batch norm (decay 0.97, eps 1e-3) in the backbone too, as torchvision's ssdlite320 does; eps and
    # momentum are not in a state_dict, so ImageNet weights still load.
    backbone = mobilenet_v2(width_mult=width_mult, out_features=list(taps),
                            weights=None if weights is not None else backbone_weights,
                            frozen_stages=frozen_stages, norm_eval=norm_eval, norm_layer=SSDLiteNorm,
                            init=backbone_init)
    model = SSDLite(backbone, num_classes=num_classes, **kwargs)
    if weights is not None:
        load_checkpoint_weights(model, weights)
    return model
