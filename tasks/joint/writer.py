"""What ``predict`` writes for the joint model: boxes drawn over the mask's colours, the masks, the COCO JSON; for a
video, the video with both drawn and per frame the detections and the pixels of each class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor

from ...pictures.detection import draw_detections
from ...pictures.segmentation import overlay_mask, save_index_png
from ...pictures.video import class_pixels
from ..detection.writer import DetectionPredictionWriter
from ..predicted_images import working_image


class JointPredictionWriter(DetectionPredictionWriter):
    """:class:`~mobilenetv2_dense.tasks.detection.writer.DetectionPredictionWriter` for ``JointTask.predict_step``:
    ``predictions.json`` (COCO results) as the detector's, one picture per image with the boxes drawn over the
    predicted mask's colours (VOC palette), and ``masks/<image stem>.png``, palette index PNGs of the displayed
    image's size (the VOC format; the mask of an image read scaled down to ``predict_max_pixels`` is resized back by
    nearest neighbour) for every image. For a video: ``<stem>.mp4`` with boxes and colours drawn on every frame, and
    ``<stem>.frames.json`` with the detector's ``detections`` and ``pixels`` (``{class name: pixels}`` of the
    classes in the frame's mask) per frame; no PNG per frame. Arguments as the detection writer's."""

    seg_class_names: list[str] | None = None  # the task's, read when predict starts

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self.seg_class_names = getattr(pl_module, "seg_class_names", None)

    def write_image_files(self, prediction: dict[str, Any]) -> None:
        save_index_png(prediction["mask"], self.output_dir / "masks" / f"{Path(prediction['path']).stem}.png")

    def picture(self, prediction: dict[str, Any], class_names: list[str] | None,
                image: np.ndarray | None = None) -> Tensor:
        image = working_image(prediction["path"], prediction["orig_size"]) if image is None else image
        tinted = overlay_mask(image, np.asarray(prediction["mask"]))
        return draw_detections(tinted, prediction["boxes"], prediction["labels"], prediction["scores"],
                               class_names=class_names, score_thresh=self.score_thresh)

    def frame_record(self, prediction: dict[str, Any], class_names: list[str] | None,
                     label_to_cat_id: dict[int, int] | None) -> dict[str, Any]:
        seg_names = self.seg_class_names or (["background", *class_names] if class_names else None)
        return {**super().frame_record(prediction, class_names, label_to_cat_id),
                "pixels": class_pixels(prediction["mask"], seg_names)}
