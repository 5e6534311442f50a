"""What ``predict`` writes for the joint model: boxes drawn over the mask's colours, the masks, the COCO JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from ...datasets.images import read_rgb
from ...pictures.detection import draw_detections
from ...pictures.segmentation import overlay_mask, save_index_png
from ..detection.writer import DetectionPredictionWriter


class JointPredictionWriter(DetectionPredictionWriter):
    """:class:`~mobilenetv2_dense.tasks.detection.writer.DetectionPredictionWriter` for ``JointTask.predict_step``:
    ``predictions.json`` (COCO results) as the detector's, one picture per image with the boxes drawn over the
    predicted mask's colours (VOC palette), and ``masks/<image stem>.png``, palette index PNGs at the original size
    (the VOC format) for every image. Arguments as the detection writer's."""

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: list[dict[str, Any]],
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        super().write_on_batch_end(trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx)
        for pred in prediction:
            save_index_png(pred["mask"], self.output_dir / "masks" / f"{Path(pred['path']).stem}.png")

    def picture(self, prediction: dict[str, Any], class_names: list[str] | None) -> Tensor:
        image = read_rgb(prediction["path"])
        tinted = overlay_mask(image, np.asarray(prediction["mask"]))
        return draw_detections(tinted, prediction["boxes"], prediction["labels"], prediction["scores"],
                               class_names=class_names, score_thresh=self.score_thresh)
