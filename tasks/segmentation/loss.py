"""The segmentation loss, a part of every task that segments: pixel cross-entropy (void 255 ignored), optionally
plus smp's multiclass Dice."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import Tensor, nn
from torch.nn import functional as F

from .metrics import IGNORE_INDEX


@dataclass
class SegmentationLossSettings:
    """A task's segmentation ``loss`` block (the joint task's ``segmentation_loss``).

    Treated as a value: changes go through :meth:`replace` (not frozen, because Lightning rebuilds hyper-parameter
    dataclasses field by field when it writes ``hparams.yaml``).

    Args:
        dice_weight: add ``dice_weight *`` smp's multiclass Dice to the cross-entropy (0: cross-entropy alone).
    """

    dice_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.dice_weight < 0:
            raise ValueError(f"SegmentationLossSettings: dice_weight must be >= 0, got {self.dice_weight}")

    def replace(self, **changes: Any) -> SegmentationLossSettings:
        """These settings with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# Tasks keep these settings in their hyper-parameters: checkpoints must load with weights_only=True.
torch.serialization.add_safe_globals([SegmentationLossSettings])


class SegmentationLoss(nn.Module):
    """``loss(logits (N, K, H, W), masks (N, H, W)) -> {"loss", "ce"[, "dice"]}``, labels 0..K-1 and 255 void.

    ``loss = ce + dice_weight * dice``; ``dice`` is there when weighted. Logits are scored in float32.
    """

    def __init__(self, settings: SegmentationLossSettings = SegmentationLossSettings()) -> None:
        super().__init__()
        self.settings = settings
        self.dice = DiceLoss(mode="multiclass", ignore_index=IGNORE_INDEX) if settings.dice_weight > 0 else None

    def forward(self, logits: Tensor, masks: Tensor) -> dict[str, Tensor]:
        logits = logits.float()
        ce = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
        losses = {"ce": ce, "loss": ce}
        if self.dice is not None:
            losses["dice"] = self.dice(logits, masks)
            losses["loss"] = ce + self.settings.dice_weight * losses["dice"]
        return losses
