"""One MobileNetV2 trunk, two heads: SSDLite detection and DeepLabv3-lite segmentation from one backbone forward.

The MobileNetV2 paper puts SSDLite (Sec. 6.2) and DeepLabv3 (Sec. 6.3) on the same backbone but trains and runs
them apart: on a phone that is two backbones' latency. Here both heads share the backbone's features: SSDLite on
the layer-15 expansion (stride 16) and the 1280 layer (stride 32) exactly as :class:`~mobilenetv2_dense.models.
SSDLite`, the DeepLabv3 lite head (1x1 + image pooling) on the 320-channel ``stage7`` it passes on the way. The
detector needs the 1280 layer at stride 32, so ``stage7`` is at output stride 32 here, not dilated to 16 as in the
single-task :func:`~mobilenetv2_dense.models.deeplabv3_mobilenet_v2`; ``decoder=True`` adds the DeepLabv3+ decoder
on a finer feature (``decoder_feature``; the detector's stride-16 tap is the cheap choice) to win back resolution.

Parameters and MAdds at 320x320, width 1 (``mobilenetv2_dense.backbone.complexity``; checked in
``tests/models/test_joint_model.py``); COCO: 80 object classes, 81 segmentation classes (background included);
VOC: 20 and 21:

================================================  =================  =================
model                                             COCO               VOC
================================================  =================  =================
SSDLite (``ssdlite320_mobilenet_v2``)             4.337M, 0.789B     3.356M, 0.695B
DeepLabv3-lite OS16 (``deeplabv3_mobilenet_v2``)  2.129M, 1.023B     2.114M, 1.017B
the two apart                                     6.466M, 1.812B     5.469M, 1.713B
joint, lite head (this module)                    4.654M, 0.812B     3.658M, 0.717B
joint + decoder on stage6_expansion (stride 16)   4.833M, 0.889B     3.836M, 0.789B
joint + decoder on stage3 (stride 8)              4.806M, 1.083B     3.810M, 0.965B
joint + decoder on stage2 (stride 4)              4.806M, 1.900B     3.809M, 1.708B
================================================  =================  =================

The joint model is the detector plus a lite head on a 10x10 map (+0.32M parameters, +0.02B MAdds): 0.45x the
MAdds of the two networks apart. The decoder's two separable 3x3 convs (304 and 256 channels) cost 0.08B on the
detector's stride-16 tap (20x20 positions), and 1.09B at stride 4 (80x80), as much as a second backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from ..backbone import MobileNetV2, mobilenet_v2
from ..heads.ssdlite import SSDLiteNorm
from .deeplab import DeepLabV3, deeplab_head, deeplab_logits
from .ssdlite import TAPS, SSDLite, check_images
from .weights import load_checkpoint_weights

SEGMENTATION_FEATURE = "stage7"  # the paper's "MNet V2*" tap: the 320-channel output of the last bottleneck
LOW_LEVEL_FEATURE = "stage2"  # stride 4, for the DeepLabv3+ decoder


def joint_features(taps: Sequence[str], decoder: bool, decoder_feature: str) -> list[str]:
    """The backbone features the joint model reads: the detector's taps, ``stage7``, the decoder's (once each)."""
    return list(dict.fromkeys([*taps, SEGMENTATION_FEATURE, *([decoder_feature] if decoder else [])]))


class SSDLiteDeepLabV3(SSDLite):
    """SSDLite with a DeepLabv3-lite head on the same backbone: one backbone forward feeds both.

    ``forward(images (N, 3, H, W))`` returns the detector's ``{"bbox_regression": (N, A, 4), "cls_logits": (N, A,
    K + 1), "anchors": (A, 4)}`` (what :class:`mobilenetv2_dense.heads.loss.SSDLoss` takes) and the segmenter's
    ``"out": (N, K_seg, H, W)`` logits, bilinearly upsampled to the input size. It is an :class:`SSDLite`: the
    anchors, box coder and :meth:`postprocess` (detections) are the detector's, so whatever evaluates or exports an
    SSDLite takes this model too; :meth:`postprocess_segmentation` gives the label maps, :meth:`predict` both.

    Args:
        backbone: a :class:`mobilenetv2_dense.backbone.MobileNetV2` at output stride 32 returning the detector's
            taps, ``stage7`` and, with ``decoder``, ``stage2``.
        num_classes: K object classes of the detector (labels 1..K, 0 is background).
        num_seg_classes: K_seg segmentation classes, background included (label 255 is void).
        taps: the detector's taps, in network order (paper: layer-15 expansion, the 1280 layer).
        decoder: add the DeepLabv3+ decoder on ``decoder_feature`` after the lite head.
        decoder_feature: the finer backbone feature the decoder refines with: ``stage2`` (stride 4, DeepLabv3+'s
            choice), ``stage3`` (stride 8) or the detector's own stride-16 tap ``stage6_expansion`` (shared, so the
            decoder costs only its convs at 1/16 of the input).
        **detector_settings: :class:`SSDLite`'s (``extra_channels``, anchors, ``classification``, post-processing).
    """

    def __init__(self, backbone: MobileNetV2, *, num_classes: int, num_seg_classes: int, taps: Sequence[str] = TAPS,
                 decoder: bool = False, decoder_feature: str = LOW_LEVEL_FEATURE, **detector_settings) -> None:
        if num_seg_classes < 2:
            raise ValueError(f"SSDLiteDeepLabV3: num_seg_classes counts the background too (21 for VOC, 81 for COCO's "
                             f"80 categories); got {num_seg_classes}")
        wanted = joint_features(taps, decoder, decoder_feature)
        missing = [name for name in wanted if name not in backbone.out_features]
        if missing or backbone.output_stride != 32:
            raise ValueError(f"SSDLiteDeepLabV3: the backbone returns {backbone.out_features} at output stride "
                             f"{backbone.output_stride}; build it at output stride 32 (the detector's 1280 layer is "
                             f"at stride 32) with out_features={wanted}")
        super().__init__(backbone, num_classes=num_classes, taps=taps, **detector_settings)
        self.num_seg_classes = num_seg_classes
        self.low_level_feature = decoder_feature if decoder else None
        if decoder and backbone.out_feature_info.get(decoder_feature)["reduction"] >= 32:
            raise ValueError(f"SSDLiteDeepLabV3: decoder_feature {decoder_feature!r} is at stride 32, as coarse as "
                             f"{SEGMENTATION_FEATURE}; pass a finer one: stage2 (4), stage3 (8), stage6_expansion (16)")
        # The lite head has no atrous branches, so output stride 32 needs no rates.
        self.segmentation_head, self.segmentation_decoder = deeplab_head(
            backbone.out_feature_info, num_seg_classes, in_feature=SEGMENTATION_FEATURE,
            low_level_feature=self.low_level_feature, aspp=False)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        check_images(images)
        size = tuple(images.shape[-2:])
        features = self.backbone(images)  # once, for both heads
        out = self.detector_outputs(features, size)
        out["out"] = self.segment(features, size)
        return out

    def segment(self, features: dict[str, Tensor], image_size: tuple[int, int]) -> Tensor:
        """The segmentation head on the backbone's ``features`` -> ``(N, K_seg, H, W)`` logits at ``image_size``."""
        return deeplab_logits(self.segmentation_head, self.segmentation_decoder, features,
                              in_feature=SEGMENTATION_FEATURE, low_level_feature=self.low_level_feature,
                              size=image_size)

    # The detector's post-processing is SSDLite.postprocess (inherited); the segmenter's is DeepLabV3's argmax.
    postprocess_segmentation = staticmethod(DeepLabV3.postprocess)

    @torch.no_grad()
    def predict(self, images: Tensor) -> dict:
        """``images (N, 3, H, W)`` -> ``{"detections": [{"boxes": (D, 4), "scores": (D,), "labels": (D,)}] per
        image (input pixels, labels 1..K), "seg_labels": (N, H, W) int64 in 0..K_seg-1}`` (call ``eval()`` first)."""
        outputs = self(images)
        return {"detections": self.postprocess(outputs, tuple(images.shape[-2:])),
                "seg_labels": self.postprocess_segmentation(outputs)}


def ssdlite_deeplabv3_mobilenet_v2(
    *,
    num_classes: int,
    num_seg_classes: int,
    width_mult: float = 1.0,
    decoder: bool = False,
    decoder_feature: str = LOW_LEVEL_FEATURE,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    taps: Sequence[str] = TAPS,
    backbone_init: Literal["kaiming", "normal"] = "kaiming",
    **kwargs,
) -> SSDLiteDeepLabV3:
    """MobileNetV2 + SSDLite + DeepLabv3-lite on one trunk (see the module docstring for the costs).

    Args:
        num_classes: K object classes (80 for COCO, 20 for VOC).
        num_seg_classes: K_seg segmentation classes, background included (81 for COCO, 21 for VOC).
        width_mult: MobileNetV2 width multiplier alpha.
        decoder: add the DeepLabv3+ decoder.
        decoder_feature: what the decoder refines with (see :class:`SSDLiteDeepLabV3`): ``stage2`` (stride 4),
            ``stage3`` (8), ``stage6_expansion`` (16, the detector's tap).
        weights: a checkpoint of this project (a ``JointTask``'s Lightning ``.ckpt`` or a state_dict file) holding
            every weight; ``backbone_weights`` is then not read.
        backbone_weights: torchvision ``mobilenet_v2`` state_dict file or weights name (see ``mobilenet_v2``).
        frozen_stages, norm_eval: as :func:`~mobilenetv2_dense.models.ssdlite320_mobilenet_v2`.
        taps: the detector's taps, in network order.
        backbone_init: the backbone's random init without weights (:class:`mobilenetv2_dense.backbone.MobileNetV2`'s
            ``init``).
        **kwargs: :class:`SSDLite`'s settings (``extra_channels``, anchors, ``classification``, post-processing).

    Example::

        model = ssdlite_deeplabv3_mobilenet_v2(num_classes=20, num_seg_classes=21, weights="best.ckpt").eval()
        out = model.predict(torch.rand(1, 3, 320, 320))  # {"detections": [...], "seg_labels": (1, 320, 320)}
    """
    if len(set(taps)) != len(taps):
        raise ValueError(f"ssdlite_deeplabv3_mobilenet_v2: taps {tuple(taps)} name the same feature twice; "
                         "pass two different features, e.g. ('stage6_expansion', 'conv_head')")
    out_features = joint_features(taps, decoder, decoder_feature)
    # The detector's batch norm (TF SSDLite's eps and momentum) in the backbone, as ssdlite320_mobilenet_v2 builds it.
    backbone = mobilenet_v2(width_mult=width_mult, out_features=out_features,
                            weights=None if weights is not None else backbone_weights,
                            frozen_stages=frozen_stages, norm_eval=norm_eval, norm_layer=SSDLiteNorm,
                            init=backbone_init)
    model = SSDLiteDeepLabV3(backbone, num_classes=num_classes, num_seg_classes=num_seg_classes, taps=taps,
                             decoder=decoder, decoder_feature=decoder_feature, **kwargs)
    if weights is not None:
        load_checkpoint_weights(model, weights)
    return model
