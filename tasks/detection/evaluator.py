"""COCO box evaluation and the SSD loss of one epoch, as a part any task that detects holds (the detection and joint
tasks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ...heads.loss import ssd_loss_from_sums
from ...pictures.charts import evaluation_folder
from ...pictures.detection import write_detection_pictures
from ..distributed import gather_per_image, log_split_values
from .evaluation import METRIC_NAMES, Backend, detections_to_array, evaluate_coco
from .labels import LabelSet

LOGGED_METRICS = (*METRIC_NAMES, "mar_100")
LOSS_TERMS = ("bbox_regression", "classification", "positives")  # SSDLoss.per_image's, summed over the split


class DetectionEvaluator:
    """COCO mAP and the SSD loss over an evaluation epoch: collect each batch's detections and per-image loss terms,
    gather them over ranks (each image once), score once.

    Call :meth:`start` when the epoch starts, :meth:`update` for each batch and :meth:`finish` at its end, which
    logs ``{stage}/map`` ... ``{stage}/map_large`` and ``{stage}/mar_100`` on every rank, the loss when the batches
    brought its terms, and after ``validate`` / ``test`` prints COCO's table and writes the pictures.

    The loss of the split is SSD's loss with the whole split as one batch: the smooth L1 and classification sums of
    every image, divided by the positive anchors of every image (:func:`mobilenetv2_dense.heads.loss.
    ssd_loss_from_sums`), each image counted once under DDP. It is the same number for any batch size and any
    number of processes, unlike a mean of per-batch losses (each normalised by its own batch's positives).

    Args:
        backend: ``faster_coco_eval`` (pycocotools' numbers exactly, faster) or ``pycocotools``.
    """

    def __init__(self, backend: Backend = "faster_coco_eval") -> None:
        self.backend = backend
        self._results: list[np.ndarray] = []  # per batch, the (D, 7) COCO results arrays of this rank
        # image id -> its loss terms (LOSS_TERMS) or None, for every image this rank evaluated
        self._images: dict[int, tuple[float, ...] | None] = {}

    def start(self) -> None:
        self._results, self._images = [], {}

    def update(self, detections: list[dict[str, Tensor]], targets: list[dict],
               label_to_cat_id: dict[int, int] | None, loss_terms: dict[str, Tensor] | None = None) -> None:
        """One batch's detections (boxes in original image pixels), kept as COCO results, and its per-image loss
        terms (:meth:`mobilenetv2_dense.heads.SSDLoss.per_image`; ``None`` where the backend gives no raw outputs)."""
        image_ids = [int(t["image_id"]) for t in targets]
        # (N, 3) in LOSS_TERMS' order, one copy to the CPU per batch
        terms = (torch.stack([loss_terms[name].detach() for name in LOSS_TERMS], 1).double().cpu().tolist()
                 if loss_terms is not None else [None] * len(image_ids))
        # An image met twice on this rank (sampler padding) must not count twice.
        fresh = [i for i, image_id in enumerate(image_ids) if image_id not in self._images]
        self._images.update((image_ids[i], None if terms[i] is None else tuple(terms[i])) for i in fresh)
        self._results.append(detections_to_array([detections[i] for i in fresh], [image_ids[i] for i in fresh],
                                                 label_to_cat_id))

    def gather(self) -> tuple[np.ndarray, dict[int, tuple[float, ...] | None]]:
        """Every rank's ``(D, 7)`` results and the image id -> loss terms of every image seen, on every rank, each
        image once (a ``DistributedSampler`` pads with repeats). A collective under DDP."""
        local = np.concatenate(self._results) if self._results else np.zeros((0, 7))
        return gather_per_image(local, self._images)

    def finish(self, task: Any, stage: str, labels: LabelSet, *, loss_name: str = "loss") -> dict[str, float]:
        """Score the epoch against the data module's ``{stage}_coco`` (else ``val_coco``), log, reset; the metrics,
        with ``loss``, ``bbox_regression`` and ``classification`` when every image brought its loss terms (logged as
        ``{stage}/{loss_name}``, ``{stage}/bbox_regression``, ``{stage}/classification``)."""
        datamodule = task.trainer.datamodule
        coco_gt = getattr(datamodule, f"{stage}_coco", None)  # the test split is the val split unless given
        if coco_gt is None:
            coco_gt = getattr(datamodule, "val_coco", None)
        if coco_gt is None:
            raise AttributeError(f"DetectionEvaluator: {type(datamodule).__name__} has no val_coco; COCO evaluation "
                                 "needs the ground truth as a pycocotools COCO object (see COCODataModule.val_coco)")
        results, images = self.gather()
        self.start()
        image_ids = sorted(images)
        trainer = task.trainer
        values = torch.zeros(len(LOGGED_METRICS), dtype=torch.float64)
        if trainer.is_global_zero:
            rank_zero_info(f"COCO {stage} evaluation on {len(image_ids)} images, {len(results)} detections")
            evaluating = trainer.state.fn != "fit"  # validate / test: COCO's table and the pictures
            metrics, evaluator = evaluate_coco(coco_gt, results, backend=self.backend, image_ids=image_ids,
                                               verbose=evaluating, return_eval=True)
            folder = evaluation_folder(trainer) if evaluating else None  # None: no logger, no files
            if folder is not None:
                paths = write_detection_pictures(folder, evaluator, coco_gt, results, image_ids, labels.class_names,
                                                 labels.label_to_cat_id)
                rank_zero_info("Pictures: " + ", ".join(str(path) for path in paths))
            values = torch.tensor([metrics[name] for name in LOGGED_METRICS], dtype=torch.float64)
        # COCOeval ran on rank 0 only: every rank must log its values (for checkpointing on val/map).
        scores = dict(zip(LOGGED_METRICS, trainer.strategy.broadcast(values, src=0).tolist()))
        logged = {f"{stage}/{name}": value for name, value in scores.items()}
        terms = list(images.values())
        if terms and all(term is not None for term in terms):  # the gathered terms are alike on every rank
            sums = torch.tensor(terms, dtype=torch.float64).sum(0)  # (I, 3) -> (3,), in LOSS_TERMS' order
            loss = {name: float(value) for name, value in ssd_loss_from_sums(*sums).items()}
            scores.update(loss)
            logged.update({f"{stage}/{loss_name}": loss["loss"], f"{stage}/bbox_regression": loss["bbox_regression"],
                           f"{stage}/classification": loss["classification"]})
        log_split_values(task, logged, prog_bar=(f"{stage}/map", f"{stage}/{loss_name}"))
        return scores
