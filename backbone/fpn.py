"""MobileNetV2 with a feature pyramid, as torchvision's detectors take it (``FasterRCNN``, ``RetinaNet``, ``FCOS``).

torchvision's ``BackboneWithFPN`` reaches into a backbone with ``IntermediateLayerGetter``, which only finds
top-level children (``stages.2`` is nested); this backbone already returns its features by name, so the pyramid
sits directly on that dict. What the detectors need, it gives as ``BackboneWithFPN`` does:

* an ``out_channels`` attribute (every pyramid level has that many channels);
* an ``OrderedDict`` named ``'0'``, ``'1'``, ... (one per tapped feature, stride order), then the extra block's
  levels (``'pool'`` for ``LastLevelMaxPool``, ``'p6'``, ``'p7'`` for ``LastLevelP6P7``), so
  ``MultiScaleRoIAlign(['0', '1', '2', '3'])`` and the default anchor generators fit unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from .features import FeatureInfo
from .mobilenetv2 import MobileNetV2, mobilenet_v2

# C2 .. C5 as torchvision's resnet_fpn_backbone returns them (strides 4, 8, 16, 32): with LastLevelMaxPool that is
# five levels, the count FasterRCNN's default anchor generator and box RoI pool expect.
FPN_OUT_FEATURES = ("stage2", "stage3", "stage5", "stage7")


class MobileNetV2WithFPN(nn.Module):
    """A MobileNetV2 ``body`` with torchvision's ``FeaturePyramidNetwork`` on the features it returns.

    ``forward((N, 3, H, W))`` returns an ``OrderedDict`` ``{'0': (N, out_channels, H / r0, W / r0), '1': ...}``
    (one level per feature of ``body.out_features``, in stride order; ``r`` the feature's reduction, rounded up)
    followed by the extra block's levels, each at half the resolution of the one before it.

    ``feature_info`` describes the returned levels before any forward pass (names, channels, reductions), for
    ``extra_blocks`` of ``LastLevelMaxPool`` and ``LastLevelP6P7``; another ``ExtraFPNBlock``'s levels are not
    listed there.

    Args:
        body: the backbone; every feature it returns becomes a pyramid level (``logits`` cannot).
        out_channels: channels of every pyramid level (torchvision's detectors use 256).
        extra_blocks: levels added above the last one; ``None`` is ``LastLevelMaxPool()``, as in
            ``BackboneWithFPN``. RetinaNet and FCOS take ``LastLevelP6P7(out_channels, out_channels)``.
        norm_layer: the pyramid's norm layer (``None``: its convolutions carry a bias and no norm).
    """

    def __init__(
        self,
        body: MobileNetV2,
        *,
        out_channels: int = 256,
        extra_blocks: ExtraFPNBlock | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if "logits" in body.out_features:
            raise ValueError(f"MobileNetV2WithFPN: the body returns 'logits', which has no spatial size; ask it for "
                             f"spatial features only, e.g. out_features={list(FPN_OUT_FEATURES)}")
        extra_blocks = LastLevelMaxPool() if extra_blocks is None else extra_blocks
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.feature_info.channels(), out_channels, extra_blocks=extra_blocks,
                                         norm_layer=norm_layer)
        self.out_channels = out_channels
        self._level_names = [str(i) for i in range(len(body.out_features))]
        self.feature_info = self._describe(body.out_feature_info, out_channels, extra_blocks)

    @staticmethod
    def _describe(body_info: FeatureInfo, out_channels: int, extra_blocks: ExtraFPNBlock) -> FeatureInfo:
        entries = [dict(name=str(i), num_chs=out_channels, reduction=f["reduction"], module=f"fpn.layer_blocks.{i}",
                        source=f["name"]) for i, f in enumerate(body_info)]
        top = body_info[-1]["reduction"]
        if isinstance(extra_blocks, LastLevelMaxPool):
            entries.append(dict(name="pool", num_chs=out_channels, reduction=2 * top, module="fpn.extra_blocks"))
        elif isinstance(extra_blocks, LastLevelP6P7):
            entries += [dict(name="p6", num_chs=out_channels, reduction=2 * top, module="fpn.extra_blocks.p6"),
                        dict(name="p7", num_chs=out_channels, reduction=4 * top, module="fpn.extra_blocks.p7")]
        return FeatureInfo(entries)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        features = self.body(x)
        # Our feature names -> torchvision's '0', '1', ...: the featmap_names MultiScaleRoIAlign defaults to.
        return self.fpn(OrderedDict(zip(self._level_names, features.values())))


def mobilenet_v2_fpn(
    *,
    width_mult: float = 1.0,
    weights: str | Path | None = None,
    out_features: Sequence[str] = FPN_OUT_FEATURES,
    frozen_stages: int = -1,
    norm_layer: Callable[..., nn.Module] | None = None,
    norm_eval: bool = False,
    output_stride: int = 32,
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
    fpn_norm_layer: Callable[..., nn.Module] | None = None,
) -> MobileNetV2WithFPN:
    """MobileNetV2 with an FPN, ready for ``FasterRCNN(backbone, num_classes)``, ``RetinaNet`` or ``FCOS``.

    The counterpart of torchvision's ``mobilenet_backbone(..., fpn=True)`` and ``resnet_fpn_backbone``. The
    defaults tap strides 4, 8, 16 and 32 and add a ``'pool'`` level: five levels, as FasterRCNN's defaults expect.
    RetinaNet and FCOS expect five levels from C3 .. C5 and P6 / P7::

        mobilenet_v2_fpn(out_features=["stage3", "stage5", "stage7"], extra_blocks=LastLevelP6P7(256, 256))

    Args:
        width_mult: the width multiplier alpha of :class:`MobileNetV2`.
        weights: a torchvision ``mobilenet_v2`` state_dict file or weights name, as :func:`mobilenet_v2` takes;
            only the body loads it (the pyramid starts from torchvision's FPN init).
        out_features: the backbone features the pyramid is built on (any spatial ones, see :class:`MobileNetV2`).
        frozen_stages: freeze the stem and the first ``k`` stages (``-1`` freezes nothing). torchvision's
            ``trainable_layers`` counts its 6 stride groups from the top: its 6, 5, 4, 3 (its detectors' default
            with weights), 2 and 1 are ``frozen_stages`` -1, 1, 2, 3, 5 and 7.
        norm_layer: the body's norm layer: ``torchvision.ops.FrozenBatchNorm2d`` as torchvision's detectors use with
            pretrained weights (frozen statistics and affine), ``None`` for ``nn.BatchNorm2d``.
        norm_eval: keep the body's BatchNorm statistics frozen while training (affine parameters still train).
        output_stride: 32, or 16 / 8 to dilate the last stages (the pyramid then has levels at the same stride).
        out_channels: channels of every pyramid level.
        extra_blocks: levels above the last (``None``: ``LastLevelMaxPool``).
        fpn_norm_layer: the pyramid's norm layer (``None``: none).
    """
    body = mobilenet_v2(width_mult=width_mult, weights=weights, out_features=out_features,
                        frozen_stages=frozen_stages, norm_layer=norm_layer, norm_eval=norm_eval,
                        output_stride=output_stride)
    return MobileNetV2WithFPN(body, out_channels=out_channels, extra_blocks=extra_blocks, norm_layer=fpn_norm_layer)
