"""The MobileNetV2 trunk a task builds, as one settings block (a task's ``backbone`` in YAML)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch


@dataclass
class BackboneSettings:
    """Width, starting weights, random init and what stays frozen, for the task builders' backbone.

    Treated as a value: changes go through :meth:`replace` (not frozen, because Lightning rebuilds hyper-parameter
    dataclasses field by field when it writes ``hparams.yaml``).

    Args:
        width_mult: the paper's width multiplier alpha.
        weights: a torchvision ``mobilenet_v2`` state_dict file or ImageNet weights name to start from (``None``:
            random init). A task loaded from a checkpoint does not read it: the checkpoint holds every weight.
        init: the random init without ``weights``: ``"kaiming"`` (He, fan out: torchvision's classification init)
            or ``"normal"`` (N(0, 0.03): TF's SSDLite configs, torchvision's ``ssdlite320`` from scratch). ``normal``
            relies on batch norm normalising each layer: ``norm_eval`` on random weights wants ``kaiming``.
        frozen_stages: freeze the stem and the first ``frozen_stages`` stages (``-1``: train everything).
        norm_eval: freeze the running statistics of every backbone BatchNorm while training (batches too small to
            estimate them, starting from ``weights``); their affine parameters still train.
    """

    width_mult: float = 1.0
    weights: str | None = None
    init: Literal["kaiming", "normal"] = "kaiming"
    frozen_stages: int = -1
    norm_eval: bool = False

    def __post_init__(self) -> None:
        if self.width_mult <= 0:
            raise ValueError(f"BackboneSettings: width_mult must be > 0, got {self.width_mult}")
        if self.init not in ("kaiming", "normal"):
            raise ValueError(f"BackboneSettings: init must be 'kaiming' or 'normal', got {self.init!r}")
        if self.frozen_stages < -1:
            raise ValueError(f"BackboneSettings: frozen_stages must be >= -1 (-1 freezes nothing), "
                             f"got {self.frozen_stages}")

    def replace(self, **changes: Any) -> BackboneSettings:
        """These settings with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def builder_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the model builders (``ssdlite320_mobilenet_v2``, ``deeplabv3_mobilenet_v2``,
        ``ssdlite_deeplabv3_mobilenet_v2``, ``mobilenet_v2_classifier``) these settings stand for."""
        return {"width_mult": self.width_mult, "backbone_weights": self.weights, "backbone_init": self.init,
                "frozen_stages": self.frozen_stages, "norm_eval": self.norm_eval}


# Tasks keep their BackboneSettings in their hyper-parameters: checkpoints must load with weights_only=True.
torch.serialization.add_safe_globals([BackboneSettings])
