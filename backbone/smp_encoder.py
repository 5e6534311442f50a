"""This project's MobileNetV2 as a segmentation-models-pytorch encoder, so every smp decoder runs on it.

    from mobilenetv2_dense.backbone.smp_encoder import register_smp_encoder
    import segmentation_models_pytorch as smp

    register_smp_encoder()  # explicit: importing this package registers nothing
    model = smp.DeepLabV3Plus(encoder_name="mnv2_dense", encoder_weights=None, classes=21)
    model.encoder.load_weights("mobilenet_v2_imagenet.pth")  # a local torchvision mobilenet_v2 state_dict

Why not ``encoder_weights="path.pth"``: smp 0.6 looks every ``encoder_weights`` value up in the encoder's
``pretrained_settings`` and downloads it from the Hugging Face hub, so a local file does not fit its API.
Build with ``encoder_weights=None`` and call ``model.encoder.load_weights(path)`` (before changing
``in_channels``): torchvision keys are renamed and the 1280 layer and classifier, which the encoder does
not build, are skipped.

Differences from smp's own ``mobilenet_v2`` encoder: the deepest feature is ``stage7`` (320 channels, the
paper's "MNet V2*" for DeepLab) instead of the 1280 layer, and ``encoder_output_stride`` dilates the
depthwise convs with TF DeepLab's rule through :meth:`MobileNetV2.set_output_stride` instead of smp's
generic stride patching.
"""

from __future__ import annotations

from segmentation_models_pytorch import encoders as smp_encoders
from segmentation_models_pytorch.encoders._base import EncoderMixin
from torch import Tensor

from .mobilenetv2 import DEFAULT_OUT_FEATURES, MobileNetV2

# smp encoder name -> width multiplier.
SMP_ENCODER_WIDTHS: dict[str, float] = {
    "mnv2_dense": 1.0,
    "mnv2_dense_140": 1.4,
    "mnv2_dense_075": 0.75,
    "mnv2_dense_050": 0.5,
}


class MobileNetV2Encoder(MobileNetV2, EncoderMixin):
    """MobileNetV2 with smp's encoder contract.

    ``forward((N, C_in, H, W))`` returns ``depth + 1`` tensors: the input itself, then the timm levels
    ``stage1`` (stride 2), ``stage2`` (4), ``stage3`` (8), ``stage5`` (16), ``stage7`` (32, or 16 / 8
    when dilated), with ``out_channels`` ``[3, 16, 24, 32, 96, 320]`` at width 1. Only the stages up to
    ``depth`` are built.
    """

    _is_torch_scriptable = False  # the feature dict of MobileNetV2.forward is not TorchScript-friendly

    def __init__(self, *, width_mult: float = 1.0, depth: int = 5, output_stride: int = 32) -> None:
        if not 1 <= depth <= len(DEFAULT_OUT_FEATURES):
            raise ValueError(f"{type(self).__name__} depth must be in [1, 5], got {depth}")
        self._depth = depth
        self._in_channels = 3
        super().__init__(width_mult=width_mult, output_stride=output_stride,
                         out_features=DEFAULT_OUT_FEATURES[:depth])
        self._out_channels = [3, *self.feature_info.channels(DEFAULT_OUT_FEATURES)]

    # EncoderMixin reads ``output_stride`` as a property (capped by depth); MobileNetV2 assigns it.
    @property
    def output_stride(self) -> int:
        return min(self._output_stride, 2**self._depth)

    @output_stride.setter
    def output_stride(self, value: int) -> None:
        self._output_stride = value

    def make_dilated(self, output_stride: int) -> None:
        """smp's hook for ``encoder_output_stride``: TF DeepLab dilation via ``set_output_stride``."""
        if output_stride not in (8, 16):
            raise ValueError(f"Output stride should be 16 or 8, got {output_stride}.")
        self.set_output_stride(output_stride)

    def get_stages(self) -> dict:
        raise NotImplementedError("dilation goes through set_output_stride; see make_dilated")

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x, *super().forward(x).values()]


def register_smp_encoder() -> None:
    """Add the ``mnv2_dense*`` encoders to smp's registry; calling it again changes nothing.

    Nothing calls it for you: importing :mod:`mobilenetv2_dense` or any of its sub-packages leaves smp's
    registry as it was. No pretrained settings are registered, so smp never tries to download anything for them.
    """
    for name, width in SMP_ENCODER_WIDTHS.items():
        smp_encoders.encoders[name] = {"encoder": MobileNetV2Encoder, "pretrained_settings": {},
                                       "params": {"width_mult": width}}
