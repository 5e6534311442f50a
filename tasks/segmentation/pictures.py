"""Segmentation evaluation pictures: what ``validate`` / ``test`` write next to the per-class IoU table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from mobilenetv2_dense.tasks.plots import plot_confusion_matrix, plot_iou_bars


def write_segmentation_pictures(folder: Path, scores: Mapping[str, Tensor], class_names: Sequence[str], *,
                                prefix: str = "") -> list[Path]:
    """``<prefix>iou_per_class.png`` (bars, mIoU in the title) and ``<prefix>confusion_matrix.png`` (pixels,
    row-normalised, rows = true class) in ``folder``, from :class:`SegmentationMetrics`' ``scores`` (``iou (K,)``,
    ``miou``, ``confmat (K, K)``). The joint task passes ``prefix="seg_"`` to keep the detector's confusion matrix."""
    return [plot_iou_bars(scores["iou"], class_names, folder / f"{prefix}iou_per_class.png",
                          title=f"IoU per class (mIoU {100 * float(scores['miou']):.2f})"),
            plot_confusion_matrix(scores["confmat"], class_names, folder / f"{prefix}confusion_matrix.png",
                                  title="confusion matrix (pixels; rows: true class)")]
