"""The SSDLite head of the MobileNetV2 paper (Sec. 6.2): extra layers plus separable box and class predictors.

SSDLite is SSD with every regular 3x3 conv of the prediction layers replaced by a separable conv (3x3 depthwise
+ BN + ReLU6, then a 1x1 conv). Built from channel counts alone, so it fits any backbone that names two taps;
the layer layout and initialisation follow torchvision's ``detection/ssdlite.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

# TF's SSDLite (and torchvision's ssdlite320) batch norm: decay 0.97 -> momentum 0.03, epsilon 1e-3.
SSDLiteNorm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)


def extra_block(in_channels: int, out_channels: int, *, norm_layer: Callable[..., nn.Module] = SSDLiteNorm
                ) -> nn.Sequential:
    """One extra feature layer: 1x1 conv to ``out / 2`` -> 3x3 depthwise stride 2 -> 1x1 conv to ``out``.

    ``(N, C_in, H, W) -> (N, C_out, ceil(H / 2), ceil(W / 2))``; every conv has BN + ReLU6 (paper Sec. 6.2).
    """
    mid = out_channels // 2
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, 1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, mid, 3, stride=2, groups=mid, norm_layer=norm_layer, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, out_channels, 1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
    )


def separable_predictor(in_channels: int, out_channels: int, *,
                        norm_layer: Callable[..., nn.Module] = SSDLiteNorm) -> nn.Sequential:
    """SSDLite's replacement for SSD's 3x3 predictor: 3x3 depthwise + BN + ReLU6, then a 1x1 conv with bias."""
    return nn.Sequential(
        Conv2dNormActivation(in_channels, in_channels, 3, groups=in_channels, norm_layer=norm_layer,
                             activation_layer=nn.ReLU6),
        nn.Conv2d(in_channels, out_channels, 1),
    )


def _flatten_predictions(maps: list[Tensor], values_per_anchor: int) -> Tensor:
    """Concatenate per-level predictions ``[(N, A_l * V, H_l, W_l)]`` into ``(N, A, V)``."""
    flat = []
    for x in maps:
        n, _, h, w = x.shape
        x = x.reshape(n, -1, values_per_anchor, h, w)  # (N, A_l*V, H, W) -> (N, A_l, V, H, W)
        x = x.permute(0, 3, 4, 1, 2)  # (N, A_l, V, H, W) -> (N, H, W, A_l, V): the anchor order of heads.anchors
        flat.append(x.reshape(n, -1, values_per_anchor))  # (N, H, W, A_l, V) -> (N, H*W*A_l, V)
    return torch.cat(flat, dim=1)


class SSDLiteHead(nn.Module):
    """Extra layers + SSDLite predictors on the backbone taps.

    Args:
        in_channels: ``{tap name: channels}`` of the backbone features, in network order (stride 16 then 32 for
            the paper: ``{"stage6_expansion": 576, "conv_head": 1280}``). The extra layers chain after the last.
        num_classes: K object classes; the classifier predicts K + 1 logits (column 0 = background).
        num_anchors: anchors per cell for every map, taps first then extras (``[3, 6, 6, 6, 6, 6]``), e.g. from
            :func:`mobilenetv2_dense.heads.anchors.num_anchors_per_location`.
        extra_channels: outputs of the extra layers (paper: 512, 256, 256, 128).

    ``forward(features)`` takes the backbone's ``dict[str, Tensor]`` and returns
    ``{"bbox_regression": (N, A, 4), "cls_logits": (N, A, K + 1), "feature_sizes": [(H_l, W_l), ...]}``;
    ``feature_sizes`` lists the spatial size of each of the maps, so the caller can build matching anchors.
    """

    def __init__(
        self,
        *,
        in_channels: dict[str, int],
        num_classes: int,
        num_anchors: Sequence[int],
        extra_channels: Sequence[int] = (512, 256, 256, 128),
        norm_layer: Callable[..., nn.Module] = SSDLiteNorm,
    ) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("SSDLiteHead: in_channels is empty; pass {tap name: channels} of the backbone")
        if num_classes < 1:
            raise ValueError(f"SSDLiteHead: num_classes must be >= 1 (object classes, no background), "
                             f"got {num_classes}")
        map_channels = [*in_channels.values(), *extra_channels]
        if len(num_anchors) != len(map_channels):
            raise ValueError(
                f"SSDLiteHead: num_anchors has {len(num_anchors)} entries but there are {len(map_channels)} "
                f"feature maps ({len(in_channels)} taps + {len(extra_channels)} extra layers); pass one count per "
                "map, e.g. num_anchors_per_location(num_layers=len(in_channels) + len(extra_channels))"
            )
        self.in_features = list(in_channels)
        self.num_classes = num_classes
        self.num_anchors = list(num_anchors)
        chained = [map_channels[len(in_channels) - 1], *extra_channels]
        self.extra = nn.ModuleList(extra_block(c_in, c_out, norm_layer=norm_layer)
                                   for c_in, c_out in zip(chained[:-1], chained[1:]))
        self.bbox_predictors = nn.ModuleList(separable_predictor(c, a * 4, norm_layer=norm_layer)
                                             for c, a in zip(map_channels, num_anchors))
        self.cls_predictors = nn.ModuleList(separable_predictor(c, a * (num_classes + 1), norm_layer=norm_layer)
                                            for c, a in zip(map_channels, num_anchors))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision ssdlite's _normal_init (extras and predictors): N(0, 0.03) weights, zero biases.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, mean=0.0, std=0.03)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.no_grad()
    def set_class_prior(self, prior: float = 0.01) -> None:
        """Start every object logit at ``sigmoid^-1(prior)`` (RetinaNet Sec. 4.1), for sigmoid / focal training.

        With zero biases a sigmoid head starts at p = 0.5 for all A * K pairs and the focal loss of the first
        steps is dominated by easy negatives; the background column (unused by focal loss) stays at 0.
        """
        if not 0 < prior < 1:
            raise ValueError(f"SSDLiteHead.set_class_prior: prior must be in (0, 1), got {prior}; RetinaNet uses 0.01")
        bias_value = -math.log((1 - prior) / prior)
        for predictor, anchors in zip(self.cls_predictors, self.num_anchors):
            bias = predictor[-1].bias.view(anchors, self.num_classes + 1)  # (A_l*(K+1),) -> (A_l, K+1)
            bias[:, 1:] = bias_value

    def forward(self, features: dict[str, Tensor]) -> dict:
        missing = [name for name in self.in_features if name not in features]
        if missing:
            raise KeyError(f"SSDLiteHead.forward: features {missing} missing from the backbone output "
                           f"(got {list(features)}); build the backbone with out_features={self.in_features}")
        maps = [features[name] for name in self.in_features]
        x = maps[-1]
        for block in self.extra:
            x = block(x)
            maps.append(x)
        bbox = [predict(x) for predict, x in zip(self.bbox_predictors, maps)]
        cls = [predict(x) for predict, x in zip(self.cls_predictors, maps)]
        return {
            "bbox_regression": _flatten_predictions(bbox, 4),
            "cls_logits": _flatten_predictions(cls, self.num_classes + 1),
            "feature_sizes": [(x.shape[-2], x.shape[-1]) for x in maps],
        }
