"""Semantic segmentation scores from one confusion matrix accumulated over a whole split.

PASCAL VOC's protocol (and TF DeepLab's ``mean_iou``): IoU per class = TP / (TP + FP + FN) over all pixels of
the split, void (255) pixels ignored; mIoU averages the classes that occur in the ground truth or the
prediction. A class absent from both has no IoU (``nan``) and is left out of the mean rather than counted as 0
or 1. Averaging per-image IoUs instead gives a different (and not comparable) number.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from ...heads.deeplab import label_map

IGNORE_INDEX = 255


def confusion_matrix(preds: Tensor, target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class, over pixels whose target is not void.

    Args:
        preds: ``(N, H, W)`` integer class indices in ``0..K-1``, or ``(N, K, H, W)`` scores (argmax taken).
        target: ``(N, H, W)`` integer labels in ``0..K-1`` or ``ignore_index``.
    """
    if preds.ndim == target.ndim + 1:
        preds = label_map(preds)  # (N, K, H, W) -> (N, H, W)
    if preds.shape != target.shape:
        raise ValueError(f"segmentation metrics: predictions {tuple(preds.shape)} and targets "
                         f"{tuple(target.shape)} differ in shape; pass (N, H, W) indices or (N, K, H, W) scores")
    valid = target != ignore_index
    target, preds = target[valid].long(), preds[valid].long()
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        bad = sorted(set(torch.unique(target[(target < 0) | (target >= num_classes)]).tolist()))
        raise ValueError(f"segmentation metrics: target labels {bad[:10]} are outside 0..{num_classes - 1} and not "
                         f"the void label {ignore_index}; set num_classes to cover every class (background "
                         "included) or map those pixels to 255 in the masks")
    # One bincount over K * true + predicted is the whole matrix, without a loop over classes.
    counts = torch.bincount(target * num_classes + preds, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores_from_confusion(confmat: Tensor) -> dict[str, Tensor]:
    """``{"miou": (), "pixel_accuracy": (), "iou": (K,)}`` from a ``(K, K)`` confusion matrix.

    ``iou`` is ``nan`` for classes absent from both truth and prediction; ``miou`` is the mean of the others
    (``nan`` when nothing was counted).
    """
    confmat = confmat.double()
    true_positive = confmat.diagonal()
    union = confmat.sum(0) + confmat.sum(1) - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp_min(1), torch.full_like(union, float("nan")))
    total = confmat.sum()
    accuracy = true_positive.sum() / total if total > 0 else torch.tensor(float("nan"), dtype=torch.float64)
    return {"miou": iou.nanmean().float(), "pixel_accuracy": accuracy.float(), "iou": iou.float()}


class SegmentationMetrics(Metric):
    """mIoU, pixel accuracy and per-class IoU over everything passed to ``update``; summed over DDP ranks.

    ``update(preds, target)`` takes ``(N, H, W)`` indices or ``(N, K, H, W)`` scores and ``(N, H, W)`` labels
    (255 ignored); ``compute()`` returns :func:`scores_from_confusion`'s dict plus ``confmat`` ``(K, K)``, the
    matrix it came from (rows = true class), for the pictures of ``validate`` and ``test``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"SegmentationMetrics: num_classes must be >= 2 (background included), got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        # Out of place: a reset under ``torch.inference_mode`` (Lightning's validate) leaves an inference tensor,
        # which a later in-place add outside inference mode (validation inside fit) would refuse.
        self.confmat = self.confmat + confusion_matrix(preds, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, Tensor]:
        return {**scores_from_confusion(self.confmat), "confmat": self.confmat.clone()}


def format_iou_table(iou: Tensor | Sequence[float], class_names: Sequence[str] | None = None,
                     *, miou: float | None = None, pixel_accuracy: float | None = None) -> str:
    """A printable table, one class per row with its IoU in percent (``-`` for a class absent from the split)."""
    values = torch.as_tensor(iou, dtype=torch.float64).tolist()
    names = list(class_names) if class_names is not None else [f"class {k}" for k in range(len(values))]
    if len(names) != len(values):
        raise ValueError(f"format_iou_table: {len(names)} class names for {len(values)} IoU values; "
                         "give one name per class, background included")
    width = max(len("class"), *(len(n) for n in names))
    lines = [f"{'class':<{width}}  {'IoU':>6}", "-" * (width + 8)]
    lines += [f"{name:<{width}}  {'-' if value != value else f'{100 * value:6.2f}':>6}"
              for name, value in zip(names, values)]
    if miou is not None or pixel_accuracy is not None:
        lines.append("-" * (width + 8))
    if miou is not None:
        lines.append(f"{'mIoU':<{width}}  {100 * float(miou):6.2f}")
    if pixel_accuracy is not None:
        lines.append(f"{'pixel acc':<{width}}  {100 * float(pixel_accuracy):6.2f}")
    return "\n".join(lines)
