"""Segmentation evaluation pictures: what ``validate`` / ``test`` write next to the per-class IoU table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ..plots import evaluation_folder, plot_confusion_matrix, plot_iou_bars
from .metrics import format_iou_table


def write_segmentation_pictures(folder: Path, scores: Mapping[str, Tensor], class_names: Sequence[str], *,
                                prefix: str = "") -> list[Path]:
    """``<prefix>iou_per_class.png`` (bars, mIoU in the title) and ``<prefix>confusion_matrix.png`` (pixels,
    row-normalised, rows = true class) in ``folder``, from :class:`SegmentationMetrics`' ``scores`` (``iou (K,)``,
    ``miou``, ``confmat (K, K)``). The joint task passes ``prefix="seg_"`` to keep the detector's confusion matrix."""
    return [plot_iou_bars(scores["iou"], class_names, folder / f"{prefix}iou_per_class.png",
                          title=f"IoU per class (mIoU {100 * float(scores['miou']):.2f})"),
            plot_confusion_matrix(scores["confmat"], class_names, folder / f"{prefix}confusion_matrix.png",
                                  title="confusion matrix (pixels; rows: true class)")]


def report_segmentation_scores(task: Any, stage: str, scores: Mapping[str, Tensor], class_names: Sequence[str] | None,
                               num_classes: int, *, pictures: str = "") -> None:
    """What a segmenting LightningModule does with an epoch's ``scores``: keep them in ``task.last_scores[stage]``,
    log ``<stage>/miou`` and ``<stage>/pixel_accuracy``, print the per-class IoU table (not in the sanity check),
    and in ``validate`` / ``test`` (not fit's validations) write the pictures with file prefix ``pictures`` into
    ``<log dir>/<validate|test>`` on rank 0 (none without a logger)."""
    task.last_scores[stage] = scores
    task.log(f"{stage}/miou", scores["miou"], prog_bar=True)
    task.log(f"{stage}/pixel_accuracy", scores["pixel_accuracy"])
    trainer = task.trainer
    if not trainer.sanity_checking:
        table = format_iou_table(scores["iou"], class_names, miou=scores["miou"],
                                 pixel_accuracy=scores["pixel_accuracy"])
        rank_zero_info(f"\n{stage} per-class IoU (epoch {task.current_epoch}):\n{table}")
    folder = evaluation_folder(trainer) if trainer.state.fn != "fit" and trainer.is_global_zero else None
    if folder is not None:
        names = class_names or [f"class {k}" for k in range(num_classes)]
        paths = write_segmentation_pictures(folder, scores, names, prefix=pictures)
        rank_zero_info("Pictures: " + ", ".join(str(path) for path in paths))
