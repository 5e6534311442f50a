"""MobileNetV2 (Sandler et al., 2018) as a multi-scale feature extractor.

The architecture follows the paper's Table 2 and torchvision's ``mobilenet_v2`` parameter for parameter,
so torchvision's ImageNet weights load unchanged (see :mod:`mobilenetv2_dense.backbone.weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from .features import FeatureInfo

# Paper Table 2: expansion t, output channels c, repeats n, stride s of the first repeat.
INVERTED_RESIDUAL_SETTING: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
OUTPUT_STRIDES = (8, 16, 32)
# The timm `features_only` levels: the last feature map at each of strides 2, 4, 8, 16, 32.
DEFAULT_OUT_FEATURES = ("stage1", "stage2", "stage3", "stage5", "stage7")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of ``divisor``, never dropping more than 10%.

    This is the rounding of the reference implementations (TF-Slim, torchvision), which the paper's
    parameter counts use; a plain ``int(c * alpha)`` gives other counts.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def block_geometry(output_stride: int) -> list[list[tuple[int, int]]]:
    """``(stride, dilation)`` of every block, stage by stage, for an output stride of 8, 16 or 32.

    TF DeepLab's rule: once the output stride is reached, the block that would stride keeps the current
    dilation rate and the rate is multiplied by its stride for the blocks after it.
    """
    geometry, current_stride, rate = [], 2, 1
    for _, _, n, s in INVERTED_RESIDUAL_SETTING:
        stage = []
        for i in range(n):
            stride = s if i == 0 else 1
            if current_stride * stride > output_stride:
                stage.append((1, rate))
                rate *= stride
            else:
                stage.append((stride, rate))
                current_stride *= stride
        geometry.append(stage)
    return geometry


class InvertedResidual(nn.Module):
    """The bottleneck block (paper Sec. 3.3, Table 1): 1x1 expansion -> 3x3 depthwise -> linear 1x1 projection.

    Input ``(N, C_in, H, W)``, output ``(N, C_out, H / stride, W / stride)``. The projection has no
    activation (the "linear bottleneck"); the residual is added only for stride 1 and ``C_in == C_out``.
    A block with ``expand_ratio == 1`` has no expansion conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        expand_ratio: int,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.hidden_channels = hidden
        self.expand = (
            Conv2dNormActivation(in_channels, hidden, 1, norm_layer=norm_layer, activation_layer=nn.ReLU6)
            if expand_ratio != 1
            else nn.Identity()
        )
        self.depthwise = Conv2dNormActivation(
            hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden,
            norm_layer=norm_layer, activation_layer=nn.ReLU6,
        )
        self.project = Conv2dNormActivation(hidden, out_channels, 1, norm_layer=norm_layer, activation_layer=None)

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(block output, expansion output)``; the latter is ``(N, hidden, H, W)``, pre-stride."""
        expanded = self.expand(x)
        out = self.project(self.depthwise(expanded))
        return (x + out if self.use_residual else out), expanded

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 returning a ``dict[str, Tensor]`` of the features named in ``out_features``.

    Features (see ``feature_info`` for channels and real strides, known without a forward pass):
    ``stem``; ``stage1`` .. ``stage7`` (the outputs of the seven bottleneck stages of Table 2);
    ``stage{2,3,4,6}_expansion`` (the expansion output of the block that strides; ``stage6_expansion`` is the
    paper's "layer 15" tap for SSDLite); ``conv_head`` (the 1x1 conv to 1280); ``logits`` (when
    ``num_classes`` is set). Modules past the last requested feature are not built, so a DeepLab backbone
    that stops at ``stage7`` carries no 1280 layer.

    ``feature_info`` is a timm ``FeatureInfo`` over every feature, its ``out_indices`` the returned ones:
    ``feature_info.channels()`` and ``.reduction()`` describe what ``forward`` returns, in the same order.
    ``out_feature_info`` lists the returned features alone.

    Args:
        width_mult: the width multiplier alpha; channels round to multiples of 8 and the 1280 layer grows
            only for alpha > 1.
        output_stride: 32 (classification), 16 or 8 (DeepLab): past it, depthwise convs dilate instead of
            striding, following TF DeepLab's rule (the block that would stride keeps the current rate).
        out_features: names of the features to return, in any order; defaults to ``("logits",)`` with a
            classifier and to the five timm levels otherwise.
        num_classes: build the classifier (dropout + linear after global average pooling).
        frozen_stages: -1 freezes nothing, 0 the stem, k the stem and stages 1..k (parameters and BN stats).
        norm_eval: keep every BatchNorm in eval mode while training (frozen running statistics).
        init: how the conv weights start (biases at zero, norms at 1 / 0, the classifier at N(0, 0.01)):
            ``"kaiming"``, torchvision's classification init (He normal, fan out); ``"normal"``, N(0, 0.03), the
            detectors' from-scratch init (TF's SSDLite configs, torchvision's ``ssdlite320`` without backbone
            weights). Loaded ``weights`` replace either.
    """

    def __init__(
        self,
        *,
        width_mult: float = 1.0,
        output_stride: int = 32,
        out_features: Sequence[str] | None = None,
        num_classes: int | None = None,
        dropout: float = 0.2,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm_layer: Callable[..., nn.Module] | None = None,
        init: Literal["kaiming", "normal"] = "kaiming",
    ) -> None:
        super().__init__()
        if init not in ("kaiming", "normal"):
            raise ValueError(f"MobileNetV2: init must be 'kaiming' or 'normal', got {init!r}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}; "
                "use 32 for classification or detection, 16 or 8 for DeepLab"
            )
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}; the paper uses 0.35 to 1.4")
        if not -1 <= frozen_stages <= len(INVERTED_RESIDUAL_SETTING):
            raise ValueError(f"frozen_stages must be in [-1, 7], got {frozen_stages}")
        norm_layer = norm_layer or nn.BatchNorm2d
        self.width_mult = width_mult
        self.output_stride = output_stride
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.num_classes = num_classes

        if out_features is None:
            out_features = ("logits",) if num_classes else DEFAULT_OUT_FEATURES
        if isinstance(out_features, str):
            raise TypeError(f"out_features must be a list of names, got the string {out_features!r}")
        described = self._describe(width_mult, output_stride, num_classes)
        if not out_features:
            raise ValueError(f"out_features must name at least one feature; available: {', '.join(described.names)}")
        for name in out_features:
            if name not in described.names:
                fix = " (set num_classes to build the classifier)" if name == "logits" else ""
                raise ValueError(f"unknown feature {name!r}{fix}; available: {', '.join(described.names)}")
        self.feature_info = described.from_other(sorted(described.names.index(n) for n in set(out_features)))
        self.out_features = self.feature_info.out_names  # network order, whatever order they were asked in
        self._out = frozenset(self.out_features)
        built = set(self.feature_info.names[: max(self.feature_info.out_indices) + 1])

        # Build only up to the last requested feature.
        stem_channels = make_divisible(STEM_CHANNELS * width_mult)
        self.stem = Conv2dNormActivation(3, stem_channels, 3, stride=2, norm_layer=norm_layer,
                                         activation_layer=nn.ReLU6)
        self.stages = nn.ModuleList()
        in_channels = stem_channels
        geometry = block_geometry(output_stride)
        for index, (t, c, _, _) in enumerate(INVERTED_RESIDUAL_SETTING, start=1):
            if f"stage{index}" not in built and f"stage{index}_expansion" not in built:
                break
            out_channels = make_divisible(c * width_mult)
            blocks = []
            for stride, dilation in geometry[index - 1]:
                blocks.append(InvertedResidual(in_channels, out_channels, stride=stride, expand_ratio=t,
                                               dilation=dilation, norm_layer=norm_layer))
                in_channels = out_channels
            self.stages.append(nn.Sequential(*blocks))
        self.conv_head = None
        if "conv_head" in built:
            self.conv_head = Conv2dNormActivation(in_channels, self.feature_info.channels("conv_head"), 1,
                                                  norm_layer=norm_layer, activation_layer=nn.ReLU6)
        self.classifier = None
        if "logits" in built:
            self.classifier = nn.Sequential(nn.Dropout(p=dropout),
                                            nn.Linear(self.feature_info.channels("conv_head"), num_classes))
        self._init_weights(init)
        self._freeze()

    @staticmethod
    def _describe(width_mult: float, output_stride: int, num_classes: int | None) -> FeatureInfo:
        """Every tappable feature with its channels and real reduction, from the configuration alone."""
        stem_channels = make_divisible(STEM_CHANNELS * width_mult)
        entries = [dict(name="stem", num_chs=stem_channels, reduction=2, module="stem", stage=0,
                        location="bottleneck")]
        in_channels, reduction = stem_channels, 2
        for index, (t, c, _, s) in enumerate(INVERTED_RESIDUAL_SETTING, start=1):
            if s == 2:
                entries.append(dict(name=f"stage{index}_expansion", num_chs=int(round(in_channels * t)),
                                    reduction=reduction, module=f"stages.{index - 1}.0.expand", stage=index,
                                    location="expansion"))
            reduction = min(reduction * s, output_stride)
            in_channels = make_divisible(c * width_mult)
            entries.append(dict(name=f"stage{index}", num_chs=in_channels, reduction=reduction,
                                module=f"stages.{index - 1}", stage=index, location="bottleneck"))
        head_channels = make_divisible(HEAD_CHANNELS * max(1.0, width_mult))
        entries.append(dict(name="conv_head", num_chs=head_channels, reduction=reduction, module="conv_head",
                            stage=len(INVERTED_RESIDUAL_SETTING) + 1, location="bottleneck"))
        if num_classes:
            entries.append(dict(name="logits", num_chs=num_classes, reduction=reduction, module="classifier",
                                stage=len(INVERTED_RESIDUAL_SETTING) + 2, location="classifier"))
        return FeatureInfo(entries)

    @property
    def out_feature_info(self) -> FeatureInfo:
        """The returned features alone, in the order ``forward`` returns them: here every index counts returned
        features (``out_feature_info.channels(i) == feature_info.channels()[i]``)."""
        return self.feature_info.select(self.out_features)

    def _init_weights(self, init: str) -> None:
        # torchvision's initialisations, so a model trained here and one trained there start alike.
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and init == "normal":
                # Under BN each conv is scale-free, so the size of its weights against the optimiser's steps
                # sets how fast it learns: one std for every conv, not He's 0.015 .. 0.29 by fan-out.
                nn.init.normal_(m.weight, 0.0, 0.03)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.stem, *self.stages[: self.frozen_stages]]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.requires_grad_(False)
        self._hold_eval_modes()

    def _hold_eval_modes(self) -> None:
        """Put the frozen stages (and, under ``norm_eval``, every BatchNorm) in eval mode."""
        for module in self._frozen_modules():
            module.eval()
        if self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def train(self, mode: bool = True) -> MobileNetV2:
        """Like ``nn.Module.train``, but frozen stages (and all BN layers under ``norm_eval``) stay in eval."""
        super().train(mode)
        if mode:
            self._hold_eval_modes()
        return self

    def set_output_stride(self, output_stride: int) -> None:
        """Switch output stride in place, keeping the weights (e.g. train at 16, evaluate at 8 as DeepLab does)."""
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
        for stage, geometry in zip(self.stages, block_geometry(output_stride)):
            for block, (stride, dilation) in zip(stage, geometry):
                conv = block.depthwise[0]
                conv.stride, conv.dilation, conv.padding = (stride, stride), (dilation, dilation), (dilation, dilation)
        self.output_stride = output_stride
        self.feature_info = self._describe(self.width_mult, output_stride, self.num_classes).from_other(
            self.feature_info.out_indices)

    def load_weights(self, weights: str | Path) -> None:
        """Load a torchvision ``mobilenet_v2`` state_dict file, or a torchvision weights name (downloads)."""
        from .weights import load_weights

        load_weights(self, weights)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``(N, 3, H, W)`` -> ``{name: (N, C, ceil(H / reduction), ceil(W / reduction))}`` in network order."""
        if self.training:
            # Not only in train(): Lightning >= 2.2 keeps each module's mode at fit start instead of calling
            # train(), and any caller may switch a child back to train mode; frozen statistics must hold anyway.
            self._hold_eval_modes()
        out: dict[str, Tensor] = {}
        x = self.stem(x)
        if "stem" in self._out:
            out["stem"] = x
        for index, stage in enumerate(self.stages, start=1):
            tap = f"stage{index}_expansion"
            for i, block in enumerate(stage):
                if i == 0 and tap in self._out:
                    x, out[tap] = block.forward_with_expansion(x)
                else:
                    x = block(x)
            if f"stage{index}" in self._out:
                out[f"stage{index}"] = x
        if self.conv_head is not None:
            x = self.conv_head(x)
            if "conv_head" in self._out:
                out["conv_head"] = x
        if self.classifier is not None:
            # (N, C, H, W) -> (N, C) -> (N, K)
            out["logits"] = self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
        return out


def mobilenet_v2(
    *,
    width_mult: float = 1.0,
    output_stride: int = 32,
    out_features: Sequence[str] | None = None,
    num_classes: int | None = None,
    weights: str | Path | None = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
    **kwargs,
) -> MobileNetV2:
    """Build a MobileNetV2 feature extractor (see :class:`MobileNetV2` for the arguments).

    ``weights`` is a local torchvision ``mobilenet_v2`` state_dict file (any width; loaded with
    ``weights_only=True``), or the name of torchvision's ImageNet weights (``"IMAGENET1K_V1"``,
    ``"IMAGENET1K_V2"``, ``"DEFAULT"``; width 1.0 only), which torchvision downloads on first use.

    Example::

        model = mobilenet_v2(out_features=["stage6_expansion", "conv_head"])
        feats = model(torch.randn(1, 3, 320, 320))
        # {"stage6_expansion": (1, 576, 20, 20), "conv_head": (1, 1280, 10, 10)}
    """
    model = MobileNetV2(width_mult=width_mult, output_stride=output_stride, out_features=out_features,
                        num_classes=num_classes, frozen_stages=frozen_stages, norm_eval=norm_eval, **kwargs)
    if weights is not None:
        model.load_weights(weights)
        model._freeze()
    return model
