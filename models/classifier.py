"""MobileNetV2 as an ImageNet classifier (paper Sec. 6.1, Table 4): the backbone with its classifier built.

``mobilenet_v2_classifier(num_classes=1000)`` has torchvision's ``mobilenet_v2`` parameters exactly (3,504,872 at
width 1; ``tests/backbone/test_torchvision_parity.py``) and 0.301B MAdds at 224x224 (``benchmarks/paper_tables.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..backbone import MobileNetV2, mobilenet_v2
from .weights import load_checkpoint_weights


def mobilenet_v2_classifier(
    *,
    num_classes: int = 1000,
    width_mult: float = 1.0,
    dropout: float = 0.2,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    frozen_stages: int = -1,
    backbone_init: Literal["kaiming", "normal"] = "kaiming",
    **kwargs,
) -> MobileNetV2:
    """MobileNetV2 classifier: ``forward(images (N, 3, H, W)) -> {"logits": (N, K)}``.

    Args:
        num_classes: K classes of the data.
        width_mult: the paper's width multiplier alpha.
        dropout: before the last linear layer.
        weights: a checkpoint of this project (a ``ClassificationTask`` Lightning ``.ckpt`` or a state_dict file)
            holding every weight; see :func:`mobilenetv2_dense.models.load_checkpoint_weights`.
            ``backbone_weights`` is then not read.
        backbone_weights: a torchvision ``mobilenet_v2`` state_dict file or ImageNet weights name (see
            :func:`mobilenetv2_dense.backbone.mobilenet_v2`); a classifier of another class count is left
            initialised.
        frozen_stages: freeze the stem and the first k stages (-1: nothing).
        backbone_init: the random init without weights (:class:`mobilenetv2_dense.backbone.MobileNetV2`'s ``init``).
        **kwargs: :class:`mobilenetv2_dense.backbone.MobileNetV2`'s other arguments (``norm_eval``, ...).
    """
    model = mobilenet_v2(width_mult=width_mult, num_classes=num_classes, dropout=dropout,
                         weights=None if weights is not None else backbone_weights, frozen_stages=frozen_stages,
                         init=backbone_init, **kwargs)
    if weights is not None:
        load_checkpoint_weights(model, weights)
    return model
