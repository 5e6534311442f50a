"""The segmentation network: MobileNetV2 (dilated) + DeepLabv3 head (+ optional DeepLabv3+ decoder).

Paper Sec. 6.3, Table 7. The head sits on ``stage7``, the 320-channel output of the last bottleneck
("MNet V2*": the second-last feature map, no 1280 layer), which the backbone then does not even build.

Cost against Table 7 (21 classes, width 1, OS16; ``mobilenetv2_dense.backbone.complexity``; paper in brackets):

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

from typing import Literal

from torch import Tensor, nn
from torch.nn import functional as F

from mobilenetv2_dense.backbone import mobilenet_v2
from mobilenetv2_dense.heads.deeplab import DeepLabV3Head, DeepLabV3PlusDecoder, atrous_rates_for


class DeepLabV3(nn.Module):
    """MobileNetV2 + DeepLabv3: ``forward(images (N, 3, H, W)) -> {"out": (N, K, H, W)}`` logits.

    The logits are bilinearly upsampled (``align_corners=False``) to the exact input size, so any H, W works
    (e.g. 500x375 VOC images unpadded).

    Args:
        num_classes: K, background included (21 for VOC); label 255 is void.
        width_mult: MobileNetV2 width multiplier.
        output_stride: 16 (the paper's training setting) or 8; see :meth:`set_output_stride`.
        head: ``"lite"`` (1x1 + image pooling branches, the paper's best speed/accuracy point) or ``"aspp"``.
        decoder: add the DeepLabv3+ decoder on the stride-4 feature ``stage2``.
        backbone_weights: a local torchvision ``mobilenet_v2`` state_dict file (or a torchvision weights name).
        frozen_stages: freeze the stem and the first k stages (-1: nothing).
        norm_eval: keep every backbone BatchNorm's running statistics frozen while training (batches under
            TF DeepLab's 12 images are too small to estimate them); their affine parameters still train.
    """

    def __init__(
        self,
        *,
        num_classes: int = 21,
        width_mult: float = 1.0,
        output_stride: int = 16,
        head: Literal["lite", "aspp"] = "lite",
        decoder: bool = False,
        backbone_weights: str | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        if head not in ("lite", "aspp"):
            raise ValueError(f"head must be 'lite' or 'aspp', got {head!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too (21 for VOC); got {num_classes}")
        rates = atrous_rates_for(output_stride)  # also rejects output strides other than 8 and 16
        self.num_classes = num_classes
        self.head_type = head
        self.backbone = mobilenet_v2(width_mult=width_mult, output_stride=output_stride,
                                     out_features=["stage2", "stage7"] if decoder else ["stage7"],
                                     weights=backbone_weights, frozen_stages=frozen_stages, norm_eval=norm_eval)
        info = self.backbone.out_feature_info
        self.head = DeepLabV3Head(info.get("stage7")["num_chs"], None if decoder else num_classes,
                                  aspp=head == "aspp", atrous_rates=rates)
        self.decoder = (DeepLabV3PlusDecoder(info.get("stage2")["num_chs"], num_classes=num_classes)
                        if decoder else None)

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
        features = self.backbone(images)
        logits = self.head(features["stage7"])  # (N, K, H/OS, W/OS), or (N, 256, ...) for the decoder
        if self.decoder is not None:
            logits = self.decoder(logits, features["stage2"])  # (N, K, H/4, W/4)
        return {"out": F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)}
