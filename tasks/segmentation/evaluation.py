"""One split's segmentation scores over an evaluation epoch, the part every task that segments evaluates with
(``SegmentationTask``, and ``JointTask`` for its masks).

Per batch the task gives log-probabilities at each mask's size; the evaluator leaves out the samples a
``DistributedSampler`` repeats to even out the ranks, adds the loss sums (:class:`~mobilenetv2_dense.tasks.
segmentation.loss.SplitSegmentationLoss`: the cross-entropy per labelled pixel of the split, and the Dice term from
split-level sums) and the confusion matrix, and at the end of the epoch computes, reports (per-class table,
pictures) and resets. Sums and the confusion matrix are summed over DDP ranks by the metrics themselves, so every
rank logs the same values, equal to one process's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from ...heads.deeplab import label_map
from ...pictures.charts import evaluation_folder
from ...pictures.segmentation import write_segmentation_pictures
from ..distributed import log_split_values, sampler_repeats
from .loss import SegmentationLossSettings, SplitSegmentationLoss
from .metrics import SegmentationMetrics, format_iou_table


@dataclass
class SegmentationEvaluation:
    """How validate, test and predict run a segmenter (the tasks' ``evaluation`` YAML block).

    Treated as a value (changes through ``dataclasses.replace``); not frozen, because Lightning rebuilds
    hyper-parameter dataclasses field by field when it writes ``hparams.yaml``.

    Args:
        output_stride: the backbone's output stride for validation, test and predict (8: the paper's OS8
            evaluation of weights trained at OS16); the training stride is restored afterwards. ``None`` keeps the
            training stride.
        scales: test-time input scales; softmax probabilities are averaged at the input size (the paper's "MS":
            ``[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]``).
        flip: also average over left-right flipped inputs (the paper's "F").
    """

    output_stride: int | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        if self.output_stride not in (None, 8, 16):
            raise ValueError(f"SegmentationEvaluation: output_stride must be 8, 16 or null, got {self.output_stride}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"SegmentationEvaluation: scales must be positive numbers, got {list(self.scales)}; "
                             "use [1.0] for single-scale evaluation, e.g. [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] for MS")
        self.scales = tuple(float(s) for s in self.scales)


# Tasks keep their SegmentationEvaluation in their hyper-parameters: checkpoints must load with weights_only=True.
torch.serialization.add_safe_globals([SegmentationEvaluation])


class SegmentationEvaluator(nn.Module):
    """mIoU, pixel accuracy, per-class IoU and the segmentation loss of one split.

    Call :meth:`start` when the epoch starts, :meth:`keep` for each batch (which of its samples to score),
    :meth:`update` with the kept samples' log-probabilities, and :meth:`finish` at the end of the epoch.
    A module, so its metrics follow the task's device; their states are in no checkpoint.

    Args:
        num_classes: K, background included.
        loss: the task's loss settings; with ``dice_weight > 0`` the loss adds the weighted Dice term.
    """

    def __init__(self, num_classes: int, loss: SegmentationLossSettings = SegmentationLossSettings()) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.metrics = SegmentationMetrics(num_classes)
        self.loss = SplitSegmentationLoss(num_classes, loss)
        self._seen: dict[int, int] = {}  # per dataloader: samples this rank evaluated so far, in the sampler's order

    def start(self) -> None:
        self._seen = {}

    def keep(self, loader: Any, count: int, dataloader_idx: int = 0) -> list[bool]:
        """Which of this rank's next ``count`` samples of ``loader`` to score: all but a ``DistributedSampler``'s
        repeats (known from the sampler, so no rank waits on another)."""
        start = self._seen.get(dataloader_idx, 0)
        self._seen[dataloader_idx] = start + count
        return [not repeat for repeat in sampler_repeats(loader, start, count)]

    def update(self, log_probs: Tensor, target: Tensor) -> None:
        """``log_probs (n, K, h, w)`` (log-softmax, or the log of averaged test-time probabilities) and ``target
        (n, h, w)`` labels, 255 void."""
        self.loss.update(log_probs, target)
        self.metrics.update(label_map(log_probs), target)

    def finish(self, task: Any, stage: str, class_names: Sequence[str] | None, *, pictures: str = "",
               loss_name: str = "loss") -> tuple[dict[str, Tensor], Tensor]:
        """Compute the epoch's scores, log the loss as ``{stage}/{loss_name}`` (with ``{stage}/ce`` and
        ``{stage}/dice`` when Dice is weighted), reset, and report the scores (``{stage}/miou`` and
        ``{stage}/pixel_accuracy`` logs, the per-class table, the pictures with ``pictures`` as file prefix).
        Returns the scores and the loss."""
        scores, losses = self.metrics.compute(), self.loss.compute()
        logged = {f"{stage}/{loss_name}": losses["loss"]}
        if "dice" in losses:
            logged.update({f"{stage}/ce": losses["ce"], f"{stage}/dice": losses["dice"]})
        log_split_values(task, logged)
        self.metrics.reset()
        self.loss.reset()
        report_segmentation_scores(task, stage, scores, class_names, self.num_classes, pictures=pictures)
        return scores, losses["loss"]


def report_segmentation_scores(task: Any, stage: str, scores: Mapping[str, Tensor], class_names: Sequence[str] | None,
                               num_classes: int, *, pictures: str = "") -> None:
    """What a segmenting LightningModule does with an epoch's ``scores``: keep them in ``task.last_scores[stage]``,
    log ``<stage>/miou`` and ``<stage>/pixel_accuracy``, print the per-class IoU table (not in the sanity check),
    and in ``validate`` / ``test`` (not fit's validations) write the pictures with file prefix ``pictures`` into
    ``<log dir>/<validate|test>`` on rank 0 (none without a logger)."""
    task.last_scores[stage] = scores
    # summed over ranks by SegmentationMetrics: the same on every rank
    log_split_values(task, {f"{stage}/miou": scores["miou"], f"{stage}/pixel_accuracy": scores["pixel_accuracy"]},
                     prog_bar=(f"{stage}/miou",))
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
