"""Anchors fitted to the training boxes: the ``fit_anchors`` step of ``DetectionTask.fit`` and the ``anchors``
command.

    python -m mobilenetv2_dense anchors --config configs/ssdlite_thin_shapes.yaml --output runs/anchors/thin.yaml
    python train_task.py fit --config configs/ssdlite_thin_shapes.yaml --config runs/anchors/thin.yaml

or, in one run, ``--model.init_args.fit_anchors true``. Both read the data module's training boxes as the network
sees them (``DetectionDataModule.train_boxes``: from the annotations and image headers, no image decoded), score the
model's anchors at the data's input size (best possible recall, mean best IoU), fit the anchor generator's values
(:func:`mobilenetv2_dense.heads.anchor_fit.fit_anchor_settings`) and score them again. The fitted values keep the
anchors per location, so the head's shapes do not change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ...heads.anchor_fit import AnchorStats, best_possible_recall, fit_anchor_settings
from ...heads.anchors import AnchorSettings, ssd_anchors
from ...models.ssdlite import SSDLite


@dataclass
class AnchorReport:
    """Scores of the anchors before and after fitting, on ``boxes`` of ``images`` training images, and the
    settings the model now has (``applied``: the fitted ones; else the fitted ones did not score higher)."""

    before: AnchorStats
    after: AnchorStats
    fitted: AnchorSettings
    applied: bool
    images: int
    image_size: tuple[int, int]

    def text(self) -> str:
        b, a = self.before, self.after
        lines = [f"anchors: {b.boxes} training boxes of {self.images} images, at the {self.image_size[0]}x"
                 f"{self.image_size[1]} input",
                 f"  best possible recall (boxes with an anchor at IoU >= 0.5 after SSD's matching): "
                 f"{b.bpr:.3f} -> {a.bpr:.3f}",
                 f"  mean best IoU (each box with its best anchor): {b.mean_best_iou:.3f} -> {a.mean_best_iou:.3f}"]
        if not self.applied:
            lines.append("  the fitted values did not score higher: the model keeps its anchors")
        lines += [f"  {key}: {value}" for key, value in self.fitted.plain().items()]
        return "\n".join(lines)


def fit_model_anchors(model: SSDLite, boxes: list[Tensor], image_size: tuple[int, int], *,
                      generations: int = 1000, seed: int = 0) -> AnchorReport:
    """Fit ``model``'s anchor values to ``boxes`` (per image, ``(M_i, 4)`` xyxy pixels of an ``image_size = (H, W)``
    input) and set them on the model when BPR + mean best IoU (with SSD's matching, all boxes) improve."""
    feature_sizes = model.feature_sizes(image_size)
    before = best_possible_recall(boxes, ssd_anchors(feature_sizes, image_size, model.anchor_settings))
    fit = fit_anchor_settings(torch.cat(boxes), model.anchor_settings, feature_sizes=feature_sizes,
                              image_size=image_size, generations=generations, seed=seed)
    after = best_possible_recall(boxes, ssd_anchors(feature_sizes, image_size, fit.settings))
    applied = after.bpr + after.mean_best_iou > before.bpr + before.mean_best_iou
    if applied:
        model.set_anchor_settings(fit.settings)
    else:
        after = before
    return AnchorReport(before, after, model.anchor_settings, applied, len(boxes), tuple(image_size))


def _data_boxes(datamodule: Any, where: str) -> tuple[list[Tensor], tuple[int, int]]:
    """The data module's training boxes and square input size, or an error saying what it lacks."""
    if datamodule is None:
        raise TypeError(f"{where}: there is no data module to read training boxes from; pass one "
                        "(trainer.fit(task, datamodule=...) or the CLI's data section), or set fit_anchors=False")
    if not hasattr(datamodule, "train_boxes") or not isinstance(getattr(datamodule, "image_size", None), int):
        raise TypeError(f"{where}: {type(datamodule).__name__} gives no training boxes; fitting anchors needs a "
                        "detection data module (COCODataModule, VOCDetectionDataModule, ShapesCOCODataModule) with "
                        "train_boxes() and an int image_size")
    return datamodule.train_boxes(), (datamodule.image_size, datamodule.image_size)


def fit_task_anchors(task: Any) -> None:
    """``DetectionTask``'s ``fit_anchors`` step (``on_fit_start``): fit, print, and record the values in the
    hyper-parameters (the checkpoint's, and the logger's ``hparams.yaml``). A resumed fit keeps its anchors: the
    checkpoint's hyper-parameters already hold the values it trained with, and changing them would move every
    regression target mid-training."""
    trainer = task.trainer
    if trainer.ckpt_path is not None:
        rank_zero_info(f"fit_anchors: resuming from {trainer.ckpt_path}; its anchors are kept, not fitted again")
        return
    boxes, image_size = _data_boxes(trainer.datamodule, "DetectionTask(fit_anchors=True)")
    # Every rank fits the same boxes with the same seed, so DDP ranks agree without a broadcast.
    report = fit_model_anchors(task.model, boxes, image_size)
    rank_zero_info(report.text())
    # A task the CLI built keeps plain values (its checkpoint is re-instantiated from them by load_from_checkpoint);
    # one built in Python keeps the dataclass it was given.
    fitted = dataclasses.asdict(report.fitted) if "_instantiator" in task.hparams else report.fitted
    task.hparams["anchors"] = fitted
    if hasattr(task, "_hparams_initial"):  # what the loggers write as hparams.yaml (after on_fit_start)
        task._hparams_initial["anchors"] = fitted
