"""The segmentation network: MobileNetV2 (dilated) + DeepLabv3 head (+ optional DeepLabv3+ decoder).

Paper Sec. 6.3, Table 7. The head sits on ``stage7``, the 320-channel output of the last bottleneck
("MNet V2*": the second-last feature map, no 1280 layer), which the backbone then does not even build.

Cost of ``deeplabv3_mobilenet_v2(num_classes=21)`` against Table 7 (width 1, OS16; counted with
``mobilenetv2_dense.backbone.complexity``, checked in ``tests/models/test_segmentation_model.py``; paper in brackets):

    head   params             MAdds at 512x512    MAdds at 513x513
    lite   2,113,557 (2.11M)  2.604B (2.75B)      2.741B
    aspp   4,523,541 (4.52M)  5.070B (5.8B)       5.364B   (+0.458B TF space_to_batch padding = 5.82B)

Parameters match to the digit only with *regular* 3x3 ASPP convs: 3 x 9 x 320 x 256 = 2.21M, plus the
projection growing from 512 to 1280 inputs (+0.20M), gives 4.52M - 2.11M. TF DeepLab's
``aspp_with_separable_conv`` would add 3 x (9 x 320 + 320 x 256) = 0.25M instead (2.57M in all), so the
paper's ASPP is not separable. The MAdds come from TF DeepLab's 513x513 crop (the paper calls the images
512x512): at 513 the lite head is off by -0.3%. TF runs a dilated conv as space_to_batch + conv + batch_to_space,
padding the 33x33 map to a multiple of the rate first, so each atrous branch computes 36x36 positions at rates
6, 12 and 18 (33 + 2r rounded up to a multiple of r, minus 2r); 3 x 737,280 MAdds x (1296 - 1089) = 0.458B
more gives 5.82B, the paper's 5.8B. The same arithmetic reproduces the OS8 + MF lite row: 8.826B at 513 x
17.375 (scales 0.5..1.75 squared, summed, x 2 for flips) = 153B (paper 152.6B).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from ..backbone import MobileNetV2, mobilenet_v2
from ..backbone.features import FeatureInfo
from ..heads.deeplab import (
    ATROUS_RATES_OS16,
    DeepLabV3Head,
    DeepLabV3PlusDecoder,
    atrous_rates_for,
    label_map,
    upsample_logits,
)
from .weights import load_checkpoint_weights


def deeplab_head(info: FeatureInfo, num_classes: int, *, in_feature: str, low_level_feature: str | None,
                 aspp: bool, atrous_rates: tuple[int, int, int] = ATROUS_RATES_OS16
                 ) -> tuple[DeepLabV3Head, DeepLabV3PlusDecoder | None]:
    """The DeepLabv3 head on the backbone feature ``in_feature`` and, when ``low_level_feature`` names one, the
    DeepLabv3+ decoder on it (the head then hands its 256 projected channels to the decoder); channels from
    ``info`` (a backbone's ``feature_info``)."""
    head = DeepLabV3Head(info.get(in_feature)["num_chs"], None if low_level_feature else num_classes, aspp=aspp,
                         atrous_rates=atrous_rates)
    decoder = (DeepLabV3PlusDecoder(info.get(low_level_feature)["num_chs"], num_classes=num_classes)
               if low_level_feature else None)
    return head, decoder


def deeplab_logits(head: DeepLabV3Head, decoder: DeepLabV3PlusDecoder | None, features: dict[str, Tensor], *,
                   in_feature: str, low_level_feature: str | None, size: Sequence[int]) -> Tensor:
    """:func:`deeplab_head`'s modules on a backbone's ``features`` -> ``(N, K, H, W)`` logits, bilinearly upsampled
    (``align_corners=False``) to ``size = (H, W)``, the input's."""
    logits = head(features[in_feature])  # (N, K, H/OS, W/OS), or (N, 256, ...) for the decoder
    if decoder is not None:
        logits = decoder(logits, features[low_level_feature])  # (N, K, H/4, W/4)
    return upsample_logits(logits, tuple(size))


class DeepLabV3(nn.Module):
    """DeepLabv3 on a dilated feature backbone: ``forward(images (N, 3, H, W)) -> {"out": (N, K, H, W)}`` logits.

    The logits are bilinearly upsampled (``align_corners=False``) to the exact input size, so any H, W works
    (e.g. 500x375 VOC images unpadded). :meth:`postprocess` turns them into label maps; :meth:`predict` does both.

    Args:
        backbone: a :class:`mobilenetv2_dense.backbone.MobileNetV2` at output stride 16 or 8 returning the
            feature the head sits on (``["stage7"]``) or, with ``decoder``, the stride-4 feature first
            (``["stage2", "stage7"]``); the ASPP rates follow its output stride.
        num_classes: K, background included (21 for VOC); label 255 is void.
        head: ``"lite"`` (1x1 + image pooling branches, the paper's best speed/accuracy point) or ``"aspp"``.
        decoder: add the DeepLabv3+ decoder on the backbone's first (stride-4) feature.
    """

    def __init__(
        self,
        backbone: MobileNetV2,
        *,
        num_classes: int = 21,
        head: Literal["lite", "aspp"] = "lite",
        decoder: bool = False,
    ) -> None:
        super().__init__()
        if head not in ("lite", "aspp"):
            raise ValueError(f"DeepLabV3: head must be 'lite' or 'aspp', got {head!r}")
        if num_classes < 2:
            raise ValueError(f"DeepLabV3: num_classes counts the background too (21 for VOC); "
                             f"got {num_classes}")
        rates = atrous_rates_for(backbone.output_stride)  # also rejects output strides other than 8 and 16
        info = backbone.out_feature_info
        if len(info.names) != (2 if decoder else 1):
            wanted = ["stage2", "stage7"] if decoder else ["stage7"]
            raise ValueError(f"DeepLabV3: the backbone returns {info.names}; with decoder={decoder} build it "
                             f"with out_features={wanted}")
        self.num_classes = num_classes
        self.head_type = head
        self.backbone = backbone
        self.in_feature = info.names[-1]  # the deepest feature (stage7)
        self.low_level_feature = info.names[0] if decoder else None  # stride 4 (stage2)
        self.head, self.decoder = deeplab_head(info, num_classes, in_feature=self.in_feature,
                                               low_level_feature=self.low_level_feature, aspp=head == "aspp",
                                               atrous_rates=rates)

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def set_output_stride(self, output_stride: int) -> None:
        """Switch backbone dilation and ASPP rates (6/12/18 at 16, 12/24/36 at 8) in place, same weights.

        DeepLab trains at output stride 16 and evaluates at 8 for the last points of mIoU (Table 7).
        """
        rates = atrous_rates_for(output_stride)
        self.backbone.set_output_stride(output_stride)
        self.head.set_atrous_rates(rates)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"out": deeplab_logits(self.head, self.decoder, self.backbone(images), in_feature=self.in_feature,
                                      low_level_feature=self.low_level_feature, size=images.shape[-2:])}

    @staticmethod
    def postprocess(outputs: dict[str, Tensor]) -> Tensor:
        """:meth:`forward`'s ``{"out": (N, K, H, W)}`` -> ``(N, H, W)`` int64 label maps (the best class per pixel)."""
        return label_map(outputs["out"])

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """``images (N, 3, H, W)`` -> ``(N, H, W)`` int64 label maps in 0..K-1 (call ``eval()`` first)."""
        return self.postprocess(self(images))


def deeplabv3_mobilenet_v2(
    *,
    num_classes: int = 21,
    head: Literal["lite", "aspp"] = "lite",
    output_stride: int = 16,
    decoder: bool = False,
    width_mult: float = 1.0,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    backbone_init: Literal["kaiming", "normal"] = "kaiming",
) -> DeepLabV3:
    """MobileNetV2 (dilated) + DeepLabv3, the segmentation network of the MobileNetV2 paper (Sec. 6.3, Table 7).

    The head sits on ``stage7`` (the paper's "MNet V2*": no 1280 layer, which the backbone then does not build).

    Args:
        num_classes: K, background included (21 for VOC); label 255 is void.
        head: ``"lite"`` (no ASPP: 1x1 + image pooling, the paper's 75.32 mIoU model) or ``"aspp"``.
        output_stride: 16 (the paper's training setting) or 8; see :meth:`DeepLabV3.set_output_stride`.
        decoder: add the DeepLabv3+ decoder on the stride-4 feature ``stage2``.
        width_mult: MobileNetV2 width multiplier.
        weights: a checkpoint of this project (a task's Lightning ``.ckpt`` or a state_dict file) holding every
            weight; see :func:`mobilenetv2_dense.models.load_checkpoint_weights`. ``backbone_weights`` is then
            not read.
        backbone_weights: a local torchvision ``mobilenet_v2`` state_dict file (or a torchvision weights name).
        frozen_stages: freeze the stem and the first k stages (-1: nothing).
        norm_eval: keep every backbone BatchNorm's running statistics frozen while training (batches under
            TF DeepLab's 12 images are too small to estimate them); their affine parameters still train.
        backbone_init: the backbone's random init when no weights are given (see
            :class:`mobilenetv2_dense.backbone.MobileNetV2`'s ``init``): ``"kaiming"`` (He, fan out) or
            ``"normal"`` (N(0, 0.03), the detectors' from-scratch default).

    Example::

        model = deeplabv3_mobilenet_v2(num_classes=21, weights="best.ckpt").eval()
        labels = model.predict(torch.rand(1, 3, 513, 513))  # (1, 513, 513) int64
    """
    # Checked before the backbone is built: that is the slow part.
    if head not in ("lite", "aspp"):
        raise ValueError(f"deeplabv3_mobilenet_v2: head must be 'lite' or 'aspp', got {head!r}")
    atrous_rates_for(output_stride)
    backbone = mobilenet_v2(width_mult=width_mult, output_stride=output_stride,
                            out_features=["stage2", "stage7"] if decoder else ["stage7"],
                            weights=None if weights is not None else backbone_weights,
                            frozen_stages=frozen_stages, norm_eval=norm_eval, init=backbone_init)
    model = DeepLabV3(backbone, num_classes=num_classes, head=head, decoder=decoder)
    if weights is not None:
        load_checkpoint_weights(model, weights)
    return model
