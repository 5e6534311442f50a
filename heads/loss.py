"""SSD's multibox loss (Liu et al. 2016, Sec. 2.2), batched: smooth L1 on positive anchors + classification.

Classification is either softmax cross-entropy with hard negative mining (negatives : positives = 3 : 1, the
MobileNetV2 paper's setting; torchvision ``SSD.compute_loss``; at least ``min_negatives_per_image`` per image, as
TF's ``HardExampleMiner``), or sigmoid focal loss over every anchor
(``torchvision.ops.sigmoid_focal_loss``; no mining, the loss down-weights easy negatives itself). Both terms
are divided by the number of positive anchors in the batch (at least 1).

Matching and mining are per image, so the loss is a ratio of per-image sums (:meth:`SSDLoss.per_image`): over a
batch ``sum_i numerator_i / max(1, sum_i P_i)``, and the same ratio over a whole split is its loss whatever the
batching (:func:`ssd_loss_from_sums`, the tasks' ``val/loss``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from .box_coder import BoxCoder
from .matcher import match_anchors, pad_boxes


def gather_targets(targets: list[dict], matches: Tensor) -> tuple[Tensor, Tensor]:
    """Per-anchor ground truth from ``matches (N, A)``: boxes ``(N, A, 4)`` and labels ``(N, A)`` (0 = background).

    Background anchors get label 0 and the box of ground truth 0 (or zeros): only positives may use the boxes.
    """
    num_images, num_anchors = matches.shape
    boxes, _ = pad_boxes([t["boxes"].to(matches.device, torch.float32) for t in targets])  # (N, M, 4), (N, M)
    labels, _ = pad_boxes([t["labels"].to(matches.device, torch.long) for t in targets])  # (N, M)
    if boxes.shape[1] == 0:  # no ground truth anywhere in the batch
        return matches.new_zeros(num_images, num_anchors, 4, dtype=torch.float32), torch.zeros_like(matches)
    index = matches.clamp(min=0)  # (N, A) into M
    matched_boxes = boxes.gather(1, index[:, :, None].expand(-1, -1, 4))  # (N, M, 4) -> (N, A, 4)
    matched_labels = labels.gather(1, index).masked_fill(matches < 0, 0)  # (N, M) -> (N, A)
    return matched_boxes, matched_labels


@dataclass
class SSDLossSettings:
    """The multibox loss's settings, one block for :class:`SSDLoss` and the detection tasks' YAML (``loss``).

    Treated as a value: changes go through :meth:`replace`, never by assigning a field (not frozen, because
    Lightning rebuilds hyper-parameter dataclasses field by field when it writes ``hparams.yaml``).

    Args:
        neg_pos_ratio: hard negatives kept per positive, per image (softmax only).
        min_negatives_per_image: hard negatives kept in every image however few positives it has (softmax only).
            Without it an image with no matched box (COCO has ~1k, plus crowd-only images) keeps 3 x 0 = 0
            negatives and teaches nothing; TF's ``ssdlite_mobilenet_v2_coco`` config keeps 3.
        classification: ``"softmax"`` (cross-entropy over K + 1 with hard negative mining) or ``"focal"``
            (sigmoid focal loss on the K object logits; the background column is ignored).
        focal_alpha, focal_gamma: focal loss parameters (RetinaNet's 0.25, 2).
        iou_threshold: IoU at which an anchor becomes positive (SSD: 0.5).
    """

    classification: Literal["softmax", "focal"] = "softmax"
    neg_pos_ratio: float = 3.0
    min_negatives_per_image: int = 3
    iou_threshold: float = 0.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        if self.classification not in ("softmax", "focal"):
            raise ValueError(f"SSDLossSettings: classification must be 'softmax' or 'focal', got "
                             f"{self.classification!r}")
        if self.neg_pos_ratio < 0:
            raise ValueError(f"SSDLossSettings: neg_pos_ratio must be >= 0, got {self.neg_pos_ratio} (SSD uses 3)")
        if not 0 < self.iou_threshold <= 1:
            raise ValueError(f"SSDLossSettings: iou_threshold must be in (0, 1], got {self.iou_threshold} "
                             "(SSD uses 0.5)")
        if self.min_negatives_per_image < 0:
            raise ValueError(f"SSDLossSettings: min_negatives_per_image must be >= 0, got "
                             f"{self.min_negatives_per_image} (TF's SSD configs use 3)")

    def replace(self, **changes: Any) -> SSDLossSettings:
        """These settings with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# Tasks keep their SSDLossSettings in their hyper-parameters: checkpoints must load with weights_only=True.
torch.serialization.add_safe_globals([SSDLossSettings])


def ssd_loss_from_sums(bbox_regression: Tensor, classification: Tensor, positives: Tensor) -> dict[str, Tensor]:
    """``{"loss", "bbox_regression", "classification"}`` from the per-image sums of :meth:`SSDLoss.per_image`
    (``(N,)`` each, or totals): both numerators divided by the positive anchors of all the images (at least 1)."""
    normaliser = positives.sum().clamp(min=1).to(bbox_regression.dtype)
    bbox_loss, cls_loss = bbox_regression.sum() / normaliser, classification.sum() / normaliser
    return {"loss": bbox_loss + cls_loss, "bbox_regression": bbox_loss, "classification": cls_loss}


class SSDLoss(nn.Module):
    """``loss(outputs, targets, box_coder) -> {"loss", "bbox_regression", "classification"}`` (scalars).

    ``outputs``: ``bbox_regression (N, A, 4)``, ``cls_logits (N, A, K + 1)``, ``anchors (A, 4)`` xyxy pixels.
    ``targets``: N dicts with ``boxes (M_i, 4)`` xyxy pixels and ``labels (M_i,)`` in 1..K.

    ``settings``: :class:`SSDLossSettings`; ``SSDLoss(iou_threshold=0.4)`` is short for
    ``SSDLoss(SSDLossSettings(iou_threshold=0.4))``.
    """

    def __init__(self, settings: SSDLossSettings | None = None, **changes: Any) -> None:
        super().__init__()
        self.settings = (settings or SSDLossSettings()).replace(**changes)

    def forward(self, outputs: dict[str, Tensor], targets: list[dict], box_coder: BoxCoder) -> dict[str, Tensor]:
        return ssd_loss_from_sums(**self.per_image(outputs, targets, box_coder))

    def per_image(self, outputs: dict[str, Tensor], targets: list[dict], box_coder: BoxCoder) -> dict[str, Tensor]:
        """Each image's unnormalised terms, ``(N,)`` float32 each: ``bbox_regression`` (smooth L1 summed over its
        positive anchors), ``classification`` (its summed cross-entropy over positives and mined negatives, or focal
        loss over every anchor) and ``positives`` (its positive anchors). :func:`ssd_loss_from_sums` makes the loss."""
        bbox_regression = outputs["bbox_regression"].float()
        cls_logits = outputs["cls_logits"].float()
        anchors = outputs["anchors"].float()
        if len(targets) != cls_logits.shape[0]:
            raise ValueError(f"SSDLoss.forward: {len(targets)} targets for a batch of {cls_logits.shape[0]} images; "
                             "pass one target dict per image")
        with torch.no_grad():
            matches = match_anchors([t["boxes"] for t in targets], anchors, self.settings.iou_threshold)  # (N, A)
            matched_boxes, cls_targets = gather_targets(targets, matches)  # (N, A, 4), (N, A)
        positive = matches >= 0  # (N, A)

        # (N, A, 4)[positive] -> (P, 4); anchors broadcast to (N, A, 4) and indexed alike
        target_codes = box_coder.encode(matched_boxes[positive], anchors.expand_as(bbox_regression)[positive])
        smooth_l1 = F.smooth_l1_loss(bbox_regression[positive], target_codes, beta=1.0, reduction="none")  # (P, 4)
        image_of_positive = positive.nonzero()[:, 0]  # (P,), in the order boolean indexing takes the positives
        bbox_loss = smooth_l1.new_zeros(len(targets)).index_add(0, image_of_positive, smooth_l1.sum(1))  # (N,)

        if self.settings.classification == "focal":
            one_hot = F.one_hot(cls_targets, cls_logits.shape[-1])[..., 1:].to(cls_logits.dtype)  # (N, A, K)
            cls_loss = sigmoid_focal_loss(cls_logits[..., 1:], one_hot, alpha=self.settings.focal_alpha,
                                          gamma=self.settings.focal_gamma, reduction="none").sum((1, 2))  # (N,)
        else:
            cls_loss = self._softmax_with_hard_negatives(cls_logits, cls_targets, positive)
        return {"bbox_regression": bbox_loss, "classification": cls_loss,
                "positives": positive.sum(1).to(cls_logits.dtype)}

    def _softmax_with_hard_negatives(self, cls_logits: Tensor, cls_targets: Tensor, positive: Tensor) -> Tensor:
        """``(N,)``: per image, summed CE over its positives and its ``max(neg_pos_ratio * P_i,
        min_negatives_per_image)`` highest-loss negatives."""
        num_images, num_anchors, num_outputs = cls_logits.shape
        # (N, A, K+1) -> (N*A, K+1) for cross_entropy, then the per-anchor loss back to (N, A)
        ce = F.cross_entropy(cls_logits.reshape(-1, num_outputs), cls_targets.reshape(-1), reduction="none")
        ce = ce.reshape(num_images, num_anchors)
        negative_ce = ce.detach().masked_fill(positive, -float("inf"))  # positives sort last
        rank = negative_ce.argsort(dim=1, descending=True).argsort(dim=1)  # (N, A): 0 = hardest negative
        num_negative = (self.settings.neg_pos_ratio * positive.sum(dim=1, keepdim=True)).long()  # (N, 1)
        num_negative = num_negative.clamp(min=self.settings.min_negatives_per_image)
        hard_negative = (rank < num_negative) & ~positive
        return torch.where(positive | hard_negative, ce, 0.0).sum(1)
