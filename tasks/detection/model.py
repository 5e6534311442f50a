"""MobileNetV2 + SSDLite, the detector of the MobileNetV2 paper (Sec. 6.2, Tables 5 and 6).

Parameter and MAdds budget of ``SSDLite(num_classes=80)`` at 320x320, counted with
``mobilenetv2_dense.backbone.complexity``
(checked in ``tests/tasks/test_detection_model.py``):

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

from functools import partial

import torch
from torch import Tensor, nn

from mobilenetv2_dense.backbone import mobilenet_v2
from mobilenetv2_dense.heads.anchors import num_anchors_per_location, ssd_anchors
from mobilenetv2_dense.heads.box_coder import BoxCoder
from mobilenetv2_dense.heads.ssdlite import SSDLiteHead


class SSDLite(nn.Module):
    """MobileNetV2 backbone tapped at ``taps`` + :class:`mobilenetv2_dense.heads.ssdlite.SSDLiteHead` + TF SSD anchors.

    ``forward(images (N, 3, H, W))`` returns ``{"bbox_regression": (N, A, 4), "cls_logits": (N, A, K + 1),
    "anchors": (A, 4)}``, anchors xyxy in input pixels for that H, W (cached per input size). ``A`` is 2034 at
    320x320 (maps 20, 10, 5, 3, 2, 1 with 3, 6, 6, 6, 6, 6 anchors per cell). ``model.box_coder`` decodes.

    Args:
        num_classes: K object classes (80 for COCO, 20 for VOC); labels 1..K, 0 is background.
        width_mult: MobileNetV2 width multiplier alpha.
        backbone_weights: torchvision ``mobilenet_v2`` state_dict file or weights name (see ``mobilenet_v2``).
        frozen_stages: backbone stages to freeze (-1: none); their BN statistics stay frozen too.
        norm_eval: keep every backbone BatchNorm's running statistics frozen while training (small batches on
            ImageNet weights); their affine parameters still train.
        taps: the two backbone features the head sits on (paper: layer-15 expansion, stride 16; the 1280 layer).
        extra_channels: outputs of the extra stride-2 layers after the last tap.
        min_scale, max_scale, aspect_ratios, reduce_boxes_in_lowest_layer: TF ``ssd_anchor_generator`` settings.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        width_mult: float = 1.0,
        backbone_weights: str | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        taps: tuple[str, str] = ("stage6_expansion", "conv_head"),
        extra_channels: tuple[int, ...] = (512, 256, 256, 128),
        min_scale: float = 0.2,
        max_scale: float = 0.95,
        aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1 / 3),
        reduce_boxes_in_lowest_layer: bool = True,
    ) -> None:
        super().__init__()
        # TF's SSDLite batch norm (decay 0.97, eps 1e-3) everywhere, as torchvision's ssdlite320 does; eps and
        # momentum are not in a state_dict, so ImageNet weights still load.
        norm_layer = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)
        self.backbone = mobilenet_v2(width_mult=width_mult, out_features=list(taps), weights=backbone_weights,
                                     frozen_stages=frozen_stages, norm_eval=norm_eval, norm_layer=norm_layer)
        tap_info = self.backbone.out_feature_info  # network order, so the stride-16 tap comes first
        if len(tap_info) != len(taps):
            raise ValueError(f"tasks/detection/model.py: taps {taps} name the same feature twice; "
                             "pass two different features, e.g. ('stage6_expansion', 'conv_head')")
        self.anchor_settings = dict(min_scale=min_scale, max_scale=max_scale, aspect_ratios=tuple(aspect_ratios),
                                    reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer)
        num_anchors = num_anchors_per_location(num_layers=len(taps) + len(extra_channels),
                                               aspect_ratios=aspect_ratios,
                                               reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer)
        self.head = SSDLiteHead(in_channels=dict(zip(tap_info.names, tap_info.channels())), num_classes=num_classes,
                                num_anchors=num_anchors, extra_channels=extra_channels, norm_layer=norm_layer)
        self.num_classes = num_classes
        self.box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self._anchor_cache: dict[tuple, Tensor] = {}

    def anchors(self, image_size: tuple[int, int], feature_sizes: list[tuple[int, int]], *,
                device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(A, 4)`` xyxy pixel anchors for an input of ``image_size`` whose maps have ``feature_sizes``."""
        key = (tuple(image_size), tuple(feature_sizes), str(device), dtype)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = ssd_anchors(feature_sizes, image_size, device=device, dtype=dtype,
                                                  **self.anchor_settings)
        return self._anchor_cache[key]

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"tasks/detection/model.py: expected images (N, 3, H, W), got {tuple(images.shape)}; "
                             "stack the batch with mobilenetv2_dense.tasks.detection.data.detection_collate")
        out = self.head(self.backbone(images))
        feature_sizes = out.pop("feature_sizes")
        out["anchors"] = self.anchors(tuple(images.shape[-2:]), feature_sizes, device=images.device)
        return out
