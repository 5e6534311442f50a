"""The segmentation loss, a part of every task that segments: pixel cross-entropy (void 255 ignored), optionally
plus smp's multiclass Dice; per batch in training (:class:`SegmentationLoss`), over a whole split in evaluation
(:class:`SplitSegmentationLoss`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import Metric

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


class SplitSegmentationLoss(Metric):
    """:class:`SegmentationLoss` over a whole split, from sums over all its labelled pixels (summed over DDP ranks).

    ``update(log_probs (n, K, h, w), target (n, h, w))`` takes log-probabilities (log-softmax of the logits, or the
    log of test-time averaged probabilities) and labels (255 void); ``compute()`` returns ``{"loss", "ce"[, "dice"]}``:

    - ``ce``: the negative log-probability of the label summed over every labelled pixel of the split, divided by
      their number;
    - ``dice`` (when ``dice_weight > 0``): smp's multiclass Dice loss with each class's intersection
      ``sum(p_k * [y = k])``, predicted mass ``sum(p_k)`` and label count ``sum([y = k])`` summed over the split:
      the mean over the K classes of ``1 - 2 I_k / (P_k + T_k)``, 0 for a class with no labelled pixel;
    - ``loss = ce + dice_weight * dice``.

    Fed the split as one batch, these are :class:`SegmentationLoss`'s values; fed in any batches, by any number of
    processes, they stay the same numbers (a mean of per-batch losses would not). States are float64 sums.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, num_classes: int, settings: SegmentationLossSettings = SegmentationLossSettings(),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.settings = num_classes, settings
        self.add_state("nll", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pixels", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        if settings.dice_weight > 0:
            for name in ("intersection", "predicted", "labelled"):  # (K,) each
                self.add_state(name, torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, log_probs: Tensor, target: Tensor) -> None:
        # Out of place, as SegmentationMetrics.update: a reset under inference mode leaves inference tensors.
        valid = target != IGNORE_INDEX  # (n, h, w)
        self.nll = self.nll + F.nll_loss(log_probs.float(), target, ignore_index=IGNORE_INDEX, reduction="sum").double()
        self.pixels = self.pixels + valid.sum()
        if self.settings.dice_weight > 0:
            probs = log_probs.float().exp()  # (n, K, h, w)
            labels = target[valid]  # (V,) the labelled pixels' classes
            label_probs = probs.gather(1, target.masked_fill(~valid, 0)[:, None])[:, 0][valid]  # (V,) p of the label
            self.intersection = self.intersection + torch.bincount(labels, label_probs.double(), self.num_classes)
            self.predicted = self.predicted + (probs * valid[:, None]).sum((0, 2, 3)).double()  # void left out, as smp
            self.labelled = self.labelled + torch.bincount(labels, minlength=self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        ce = self.nll / self.pixels.clamp_min(1)
        losses = {"ce": ce, "loss": ce}
        if self.settings.dice_weight > 0:
            # smp's soft Dice with alpha = beta = 0.5: I / (0.5 (P + T)), the denominator clamped at its eps (1e-7)
            score = self.intersection / (0.5 * (self.predicted + self.labelled)).clamp_min(1e-7)
            losses["dice"] = ((1 - score) * (self.labelled > 0)).mean()
            losses["loss"] = ce + self.settings.dice_weight * losses["dice"]
        return {name: value.float() for name, value in losses.items()}
