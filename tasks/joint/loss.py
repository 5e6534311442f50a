"""The joint objective, and segmentation logits brought to the size of each image's mask.

``JointLoss`` is what the joint task trains (and what ``benchmarks/joint.py`` trains the single-task models with,
each on the terms its outputs allow): ``detection_weight`` x SSD's multibox loss (``heads/loss.py``) +
``segmentation_weight`` x (pixel cross-entropy, void 255 ignored, + ``dice_weight`` x smp's multiclass Dice, as
``SegmentationTask`` has it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...heads.box_coder import BoxCoder
from ...heads.deeplab import upsample_logits
from ...heads.loss import SSDLoss
from ..segmentation.loss import SegmentationLoss, SegmentationLossSettings


@dataclass
class LossWeights:
    """The joint task's ``loss_weights`` block: ``train/loss = detection * SSD loss + segmentation * segmentation
    loss`` (the validation ``loss`` likewise)."""

    detection: float = 1.0
    segmentation: float = 1.0

    def __post_init__(self) -> None:
        if min(self.detection, self.segmentation) < 0:
            raise ValueError(f"LossWeights: weights must be >= 0, got detection={self.detection}, "
                             f"segmentation={self.segmentation}")


# The joint task keeps its LossWeights in its hyper-parameters: checkpoints must load with weights_only=True.
torch.serialization.add_safe_globals([LossWeights])


class JointLoss(nn.Module):
    """``loss(outputs, targets, box_coder) -> {"loss", ...}`` with each task's terms as well.

    ``outputs``: the detector's ``bbox_regression``, ``cls_logits``, ``anchors`` and / or the segmenter's ``out``
    ``(N, K_seg, H, W)``; the terms of what is there are computed, so a single-task network trains on the same
    objective's own part. ``targets``: the joint contract's dicts (``boxes``, ``labels``, ``mask (H, W)`` at the
    logits' size). Returns ``loss`` (the weighted sum) and, when present, ``detection`` (SSD's loss, with its
    ``bbox_regression`` and ``classification`` parts), ``segmentation`` (cross-entropy + weighted Dice) with ``ce``
    and ``dice``.

    Args:
        detection: the SSD loss (hard negative mining or focal).
        detection_weight, segmentation_weight: the two tasks' weights.
        dice_weight: weight of the Dice term within the segmentation loss (0: cross-entropy alone).
    """

    def __init__(self, detection: SSDLoss, *, detection_weight: float = 1.0, segmentation_weight: float = 1.0,
                 dice_weight: float = 0.0) -> None:
        super().__init__()
        if min(detection_weight, segmentation_weight, dice_weight) < 0:
            raise ValueError(f"JointLoss: weights must be >= 0, got detection_weight={detection_weight}, "
                             f"segmentation_weight={segmentation_weight}, dice_weight={dice_weight}")
        self.detection = detection
        self.segmentation = SegmentationLoss(SegmentationLossSettings(dice_weight))
        self.detection_weight, self.segmentation_weight = detection_weight, segmentation_weight

    def forward(self, outputs: dict[str, Tensor], targets: list[dict], box_coder: BoxCoder | None = None
                ) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        total = []
        if "cls_logits" in outputs:
            detection = self.detection(outputs, targets, box_coder)
            losses.update(detection=detection["loss"], bbox_regression=detection["bbox_regression"],
                          classification=detection["classification"])
            total.append(self.detection_weight * detection["loss"])
        if "out" in outputs:
            logits = outputs["out"]
            masks = torch.stack([t["mask"] for t in targets]).to(logits.device)  # (N, H, W), the logits' size
            segmentation = self.segmentation(logits, masks)
            losses.update(segmentation=segmentation.pop("loss"), **segmentation)
            total.append(self.segmentation_weight * losses["segmentation"])
        if not total:
            raise KeyError(f"JointLoss: outputs {sorted(outputs)} have neither 'cls_logits' (detection) nor 'out' "
                           "(segmentation)")
        losses["loss"] = torch.stack(total).sum()
        return losses


def logits_by_size(logits: Tensor, sizes: Sequence[tuple[int, int]]) -> Iterator[tuple[list[int], Tensor]]:
    """``(N, K, h, w)`` logits of a batch brought to each image's ``(H, W)`` in ``sizes``, images of one size together.

    Yields ``(members, logits (n, K, H, W) float32)`` per size group: bilinear resizing (``align_corners=False``, as
    the networks upsample), skipped where the sizes already agree. Evaluation masks are at the original image size
    (the network saw the image resized), so scores are the original pixels'.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault((int(size[0]), int(size[1])), []).append(i)
    for size, members in groups.items():
        chosen = (logits if len(members) == len(logits) else logits[members]).float()
        if tuple(chosen.shape[-2:]) != size:
            chosen = upsample_logits(chosen, size)
        yield members, chosen
