"""DeepLabv3 heads (Chen et al., 2017) as the MobileNetV2 paper uses them (Sec. 6.3, Table 7), plus the
DeepLabv3+ decoder (Chen et al., 2018).

Plain ``nn.Module``s built from channel counts: they know nothing of the backbone. Layers follow TF DeepLab
(``research/deeplab/model.py``): every conv is conv + BN + ReLU, 256 channels, ASPP 3x3 branches are regular
(not separable) convs because that is what the paper's parameter counts imply (see
``models/deeplab.py`` for the numbers), dropout 0.1 after the projection, 1x1 classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops.misc import Conv2dNormActivation

# DeepLabv3's rates at output stride 16; they double at output stride 8 so the branches see the same context.
ATROUS_RATES_OS16: tuple[int, int, int] = (6, 12, 18)


def atrous_rates_for(output_stride: int) -> tuple[int, int, int]:
    """ASPP rates for a backbone output stride: ``(6, 12, 18)`` at 16, ``(12, 24, 36)`` at 8."""
    if output_stride not in (8, 16):
        raise ValueError(f"DeepLabv3 output_stride must be 8 or 16, got {output_stride}; the paper uses 16 "
                         "for training and 8 for the multi-scale evaluation")
    return tuple(rate * 16 // output_stride for rate in ATROUS_RATES_OS16)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1,
                  groups: int = 1) -> Conv2dNormActivation:
    return Conv2dNormActivation(in_channels, out_channels, kernel_size, dilation=dilation, groups=groups,
                                norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU)


class ImagePooling(nn.Module):
    """The image-level branch: global average pool -> 1x1 conv -> BN -> ReLU -> broadcast back.

    ``(N, C, H, W)`` -> ``(N, out_channels, H, W)``.

    A training batch of one sample gives BatchNorm a single value per channel on the pooled 1x1 map:
    ``nn.BatchNorm2d`` raises ("Expected more than 1 value per channel") and TF's batch norm returns the
    constant ``beta`` (zero variance), throwing the image-level information away. Here such a batch is
    normalised with the running estimates, which are left unchanged; every batch of two or more samples
    uses batch statistics as usual. Bilinear upsampling of a 1x1 map is a broadcast, so ``expand`` does it
    without interpolation.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _conv_bn_relu(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        conv, norm, act = self.conv
        y = conv(F.adaptive_avg_pool2d(x, 1))  # (N, C, H, W) -> (N, C_out, 1, 1)
        if self.training and y.shape[0] == 1 and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
            y = F.batch_norm(y, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                             training=False, eps=norm.eps)
        else:
            y = norm(y)
        return act(y).expand(-1, -1, *x.shape[-2:])  # (N, C_out, 1, 1) -> (N, C_out, H, W)


class DeepLabV3Head(nn.Module):
    """DeepLabv3 head: parallel branches -> concat -> 1x1 projection -> dropout -> 1x1 classifier.

    ``(N, in_channels, H, W)`` -> ``(N, K, H, W)`` logits at the feature resolution (or the projected
    ``(N, channels, H, W)`` features when ``num_classes`` is ``None``, for a decoder to refine).

    Branches: a 1x1 conv and image pooling (the paper's "no ASPP" head, Table 7); ``aspp=True`` adds three
    3x3 convs dilated by ``atrous_rates``. Every branch is conv + BN + ReLU with ``channels`` outputs.

    Args:
        in_channels: channels of the backbone feature (320 for MobileNetV2's ``stage7`` at width 1).
        num_classes: K, background included; ``None`` drops the classifier.
        aspp: add the three atrous 3x3 branches.
        atrous_rates: their dilation rates, ``atrous_rates_for(output_stride)``.
        channels: width of every branch and of the projection (256 in the paper).
        dropout: after the projection (TF DeepLab's keep_prob 0.9).
    """

    def __init__(self, in_channels: int, num_classes: int | None, *, aspp: bool,
                 atrous_rates: tuple[int, int, int] = ATROUS_RATES_OS16, channels: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.aspp = aspp
        self.num_classes = num_classes
        self.branches = nn.ModuleList([_conv_bn_relu(in_channels, channels, 1)])
        if aspp:
            self.branches.extend(_conv_bn_relu(in_channels, channels, 3, dilation=rate) for rate in atrous_rates)
        self.pooling = ImagePooling(in_channels, channels)
        self.project = nn.Sequential(_conv_bn_relu((len(self.branches) + 1) * channels, channels, 1),
                                     nn.Dropout(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1) if num_classes else None
        self.atrous_rates = tuple(atrous_rates) if aspp else ()

    def set_atrous_rates(self, rates: tuple[int, int, int]) -> None:
        """Change the dilation of the three 3x3 branches in place (same weights); a no-op without ASPP."""
        if not self.aspp:
            return
        if len(rates) != 3:
            raise ValueError(f"DeepLabV3Head needs three atrous rates, got {rates}; use atrous_rates_for(8 or 16)")
        for branch, rate in zip(self.branches[1:], rates):
            conv = branch[0]
            # padding = dilation keeps a 3x3 conv size-preserving at any rate.
            conv.dilation, conv.padding = (rate, rate), (rate, rate)
        self.atrous_rates = tuple(rates)

    def forward(self, x: Tensor) -> Tensor:
        # K branches of (N, channels, H, W) -> (N, (K) * channels, H, W)
        y = torch.cat([branch(x) for branch in self.branches] + [self.pooling(x)], dim=1)
        y = self.project(y)
        return self.classifier(y) if self.classifier is not None else y


class SeparableConv(nn.Sequential):
    """TF DeepLab's split separable conv: 3x3 depthwise + BN + ReLU, then 1x1 pointwise + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(_conv_bn_relu(in_channels, in_channels, 3, groups=in_channels),
                         _conv_bn_relu(in_channels, out_channels, 1))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabv3+ decoder: refine head features with a stride-4 backbone feature.

    ``forward(features (N, channels, h, w), low_level (N, low_level_channels, H4, W4))`` -> ``(N, K, H4, W4)``
    logits at the low-level resolution. The low-level feature is projected to 48 channels (so it does not
    outweigh the 256 head channels), the head features are bilinearly resized onto it, and two separable
    3x3 convs (TF DeepLab's ``decoder_use_separable_conv``) with ``channels`` outputs precede the classifier.

    Args:
        low_level_channels: channels of the stride-4 feature (MobileNetV2 ``stage2``: 24 at width 1).
        channels: channels of the head features and of the decoder convs (256).
        num_classes: K, background included.
        low_level_projection: width of the low-level projection (48 in DeepLabv3+).
    """

    def __init__(self, low_level_channels: int, channels: int = 256, *, num_classes: int,
                 low_level_projection: int = 48) -> None:
        super().__init__()
        self.project_low_level = _conv_bn_relu(low_level_channels, low_level_projection, 1)
        self.refine = nn.Sequential(SeparableConv(channels + low_level_projection, channels),
                                    SeparableConv(channels, channels))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Tensor, low_level: Tensor) -> Tensor:
        features = F.interpolate(features, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        # (N, channels, H4, W4) + (N, 48, H4, W4) -> (N, channels + 48, H4, W4)
        y = torch.cat([features, self.project_low_level(low_level)], dim=1)
        return self.classifier(self.refine(y))


def upsample_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """``(N, K, h, w)`` -> ``(N, K, H, W)`` bilinear (``align_corners=False``, as DeepLab), channels-last in memory.

    Upsampling K score maps to the full image is the largest single cost of CPU inference at COCO's 81 classes, and
    PyTorch's channels-last bilinear kernel is the faster one on CPUs (``python -m benchmarks.joint --skip_latency
    --ops`` measures both); the values agree to float rounding. The result is the same tensor in another memory
    layout (:func:`label_map` over it is faster too). Traced and
    exported graphs keep the plain layout: the layout is a property of PyTorch's kernels, not of the ONNX /
    ExecuTorch graph.
    """
    if not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
        logits = logits.contiguous(memory_format=torch.channels_last)
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def label_map(logits: Tensor) -> Tensor:
    """``(N, K, H, W)`` scores -> ``(N, H, W)`` int64 best class per pixel, the first one on ties (as ``argmax``).

    ``max(1).indices`` gives ``argmax(1)``'s labels faster on the CPU, because PyTorch's argmax over the strided
    class dimension of an NCHW tensor is slow (``python -m benchmarks.joint --skip_latency --ops`` measures both),
    and this runs on every full-resolution prediction and evaluation batch.
    """
    return logits.max(1).indices
