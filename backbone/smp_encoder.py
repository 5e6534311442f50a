"""This project's MobileNetV2 as a segmentation-models-pytorch encoder, so every smp decoder runs on it.

    from mobilenetv2_dense.backbone.smp_encoder import from_pretrained, register_smp_encoder
    import segmentation_models_pytorch as smp

    register_smp_encoder()  # explicit: importing this package registers nothing
    model = smp.DeepLabV3Plus(encoder_name="mnv2_dense", encoder_weights=None, classes=21, in_channels=4)
    model.encoder.load_weights("mobilenet_v2_imagenet.pth")  # a local torchvision mobilenet_v2 state_dict
    preprocess = smp.encoders.get_preprocessing_fn("mnv2_dense")  # ImageNet mean / std, nothing downloaded
    model.save_pretrained("my_model")
    model = from_pretrained("my_model")  # in a new process: registers, then smp.from_pretrained

Why not ``encoder_weights="path.pth"``: smp 0.6 looks every ``encoder_weights`` value up in the encoder's
``pretrained_settings`` and downloads it from the Hugging Face hub, so a local file does not fit its API.
Build with ``encoder_weights=None`` and call ``model.encoder.load_weights(path)``: torchvision keys are renamed,
the 1280 layer and classifier, which the encoder does not build, are skipped, and an RGB stem is spread over
``in_channels`` as smp spreads its own encoders' pretrained stems.

Why :func:`from_pretrained`: smp 0.6 finds encoders in its module-level registry alone (no entry point or
plugin hook), so ``smp.from_pretrained`` in a process that has not called :func:`register_smp_encoder` stops at
"Wrong encoder name `mnv2_dense`".

Differences from smp's own ``mobilenet_v2`` encoder: the deepest feature is ``stage7`` (320 channels, the
paper's "MNet V2*" for DeepLab) instead of the 1280 layer, and ``encoder_output_stride`` dilates the
depthwise convs with TF DeepLab's rule through :meth:`MobileNetV2.set_output_stride` instead of smp's
generic stride patching.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from segmentation_models_pytorch import encoders as smp_encoders
from segmentation_models_pytorch.base.hub_mixin import from_pretrained as smp_from_pretrained
from segmentation_models_pytorch.encoders._base import EncoderMixin
from segmentation_models_pytorch.encoders._utils import patch_first_conv
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights

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

    def load_weights(self, weights: str | Path) -> None:
        """Load a torchvision ``mobilenet_v2`` state_dict file (see :func:`~.weights.load_weights`), whatever
        ``in_channels`` smp built the stem for.

        An RGB stem goes into a stem of ``in_channels != 3`` as smp's ``patch_first_conv`` puts its own encoders'
        pretrained stems: input channel ``i`` takes the filter of RGB channel ``i mod 3``, all scaled by
        ``3 / in_channels`` (so an input of ``in_channels / 3`` RGB copies gives the RGB response); a single channel
        takes their sum (a gray image replicated to RGB). A file saved at ``in_channels`` loads as it is.
        """
        conv = self.stem[0]
        in_channels, built = conv.in_channels, conv.weight
        if in_channels == 3:
            return super().load_weights(weights)
        # Load the file into an RGB stem, then let smp spread it over in_channels.
        conv.in_channels, conv.weight = 3, nn.Parameter(built.new_empty(conv.out_channels, 3, *conv.kernel_size))
        try:
            super().load_weights(weights)
        except Exception as error:
            conv.in_channels, conv.weight = in_channels, built  # no half-changed stem, whatever went wrong
            if not isinstance(error, ValueError):  # a missing or unreadable file
                raise
            super().load_weights(weights)  # a file saved at in_channels; otherwise its error names the model's shapes
            return
        patch_first_conv(self, new_in_channels=in_channels, default_in_channels=3, pretrained=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x, *super().forward(x).values()]


# smp's name for ImageNet weights, then torchvision's, which encoder.load_weights takes.
PRETRAINED_NAMES = ("imagenet", "IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT")


def preprocessing_params(encoder_name: str, pretrained: str = "imagenet") -> dict:
    """smp's preprocessing parameters (``input_space``, ``input_range``, ``mean``, ``std``) of an ``mnv2_dense*``
    encoder with torchvision's ImageNet weights: the normalisation those weights were trained with."""
    if pretrained not in PRETRAINED_NAMES:
        raise ValueError(f"{encoder_name}: no preprocessing for pretrained={pretrained!r}; the encoder takes "
                         f"torchvision's ImageNet weights, pretrained='imagenet' (or one of {PRETRAINED_NAMES[1:]})")
    preset = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    return {"input_space": "RGB", "input_range": [0, 1], "mean": list(preset.mean), "std": list(preset.std)}


def _serving_our_preprocessing(smp_params: Callable[..., dict]) -> Callable[..., dict]:
    """smp's ``get_preprocessing_params`` answering for the ``mnv2_dense*`` names itself.

    smp reads the parameters from a ``config.json`` it downloads for one of the encoder's ``pretrained_settings``;
    registering such settings would make ``encoder_weights="imagenet"`` download from the hub, so the answer
    comes from here instead.
    """
    @functools.wraps(smp_params)
    def get_preprocessing_params(encoder_name: str, pretrained: str = "imagenet") -> dict:
        if encoder_name in SMP_ENCODER_WIDTHS:
            return preprocessing_params(encoder_name, pretrained)
        return smp_params(encoder_name, pretrained=pretrained)

    get_preprocessing_params.serves_mnv2_dense = True
    return get_preprocessing_params


def register_smp_encoder() -> None:
    """Add the ``mnv2_dense*`` encoders to smp's registry; calling it again changes nothing.

    Nothing calls it for you: importing :mod:`mobilenetv2_dense` or any of its sub-packages leaves smp's
    registry as it was. No pretrained settings are registered, so smp never tries to download anything for them;
    ``smp.encoders.get_preprocessing_fn(name)`` answers for these names without a download (torchvision's ImageNet
    mean and std), every other name as smp did.
    """
    for name, width in SMP_ENCODER_WIDTHS.items():
        smp_encoders.encoders[name] = {"encoder": MobileNetV2Encoder, "pretrained_settings": {},
                                       "params": {"width_mult": width}}
    # get_preprocessing_fn looks get_preprocessing_params up in smp.encoders' namespace at each call.
    if not getattr(smp_encoders.get_preprocessing_params, "serves_mnv2_dense", False):
        smp_encoders.get_preprocessing_params = _serving_our_preprocessing(smp_encoders.get_preprocessing_params)


def from_pretrained(pretrained_model_name_or_path: str | Path, **kwargs) -> nn.Module:
    """``smp.from_pretrained`` for a model saved (``save_pretrained``) with an ``mnv2_dense*`` encoder, in any process.

    Registers the encoders first: smp 0.6 has no entry point through which it could find them, so a bare
    ``smp.from_pretrained`` works only after :func:`register_smp_encoder`. ``kwargs`` go to smp (``strict``, ...).
    """
    register_smp_encoder()
    return smp_from_pretrained(str(pretrained_model_name_or_path), **kwargs)
