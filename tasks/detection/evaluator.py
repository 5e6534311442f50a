"""COCO box evaluation of one epoch, as a part any task that detects holds (the detection and joint tasks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ...pictures.charts import evaluation_folder
from ...pictures.detection import write_detection_pictures
from ..distributed import gather_per_image
from .evaluation import METRIC_NAMES, Backend, detections_to_array, evaluate_coco
from .labels import LabelSet

LOGGED_METRICS = (*METRIC_NAMES, "mar_100")


class DetectionEvaluator:
    """COCO mAP over an evaluation epoch: collect each batch's detections, gather them over ranks, score once.

    Call :meth:`start` when the epoch starts, :meth:`update` for each batch and :meth:`finish` at its end, which
    logs ``{stage}/map`` ... ``{stage}/map_large`` and ``{stage}/mar_100`` on every rank, and after ``validate`` /
    ``test`` prints COCO's table and writes the pictures.

    Args:
        backend: ``faster_coco_eval`` (pycocotools' numbers exactly, faster) or ``pycocotools``.
    """

    def __init__(self, backend: Backend = "faster_coco_eval") -> None:
        self.backend = backend
        self._results: list[np.ndarray] = []  # per batch, the (D, 7) COCO results arrays of this rank
        self._image_ids: set[int] = set()

    def start(self) -> None:
        self._results, self._image_ids = [], set()

    def update(self, detections: list[dict[str, Tensor]], targets: list[dict],
               label_to_cat_id: dict[int, int] | None) -> None:
        """One batch's detections (boxes in original image pixels), kept as COCO results."""
        image_ids = [int(t["image_id"]) for t in targets]
        # An image met twice on this rank (sampler padding) must not count its detections twice.
        fresh = [i for i, image_id in enumerate(image_ids) if image_id not in self._image_ids]
        self._image_ids.update(image_ids[i] for i in fresh)
        self._results.append(detections_to_array([detections[i] for i in fresh], [image_ids[i] for i in fresh],
                                                 label_to_cat_id))

    def gather(self) -> tuple[np.ndarray, list[int]]:
        """Every rank's ``(D, 7)`` results and the sorted ids of the images seen, on every rank, each image once (a
        ``DistributedSampler`` pads with repeats). A collective under DDP."""
        local = np.concatenate(self._results) if self._results else np.zeros((0, 7))
        results, seen = gather_per_image(local, dict.fromkeys(sorted(self._image_ids)))
        return results, sorted(seen)

    def finish(self, task: Any, stage: str, labels: LabelSet) -> dict[str, float]:
        """Score the epoch against the data module's ``{stage}_coco`` (else ``val_coco``), log, reset; the metrics."""
        datamodule = task.trainer.datamodule
        coco_gt = getattr(datamodule, f"{stage}_coco", None)  # the test split is the val split unless given
        if coco_gt is None:
            coco_gt = getattr(datamodule, "val_coco", None)
        if coco_gt is None:
            raise AttributeError(f"DetectionEvaluator: {type(datamodule).__name__} has no val_coco; COCO evaluation "
                                 "needs the ground truth as a pycocotools COCO object (see COCODataModule.val_coco)")
        results, image_ids = self.gather()
        self.start()
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
        # Rank 0 computed them; every rank must log the same values for checkpointing on val/map.
        values = trainer.strategy.broadcast(values, src=0)
        for name, value in zip(LOGGED_METRICS, values.tolist()):
            task.log(f"{stage}/{name}", value, prog_bar=name == "map", sync_dist=False, rank_zero_only=False)
        return dict(zip(LOGGED_METRICS, values.tolist()))
