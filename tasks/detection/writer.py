"""The callback that writes pictures of detections (plus a COCO results JSON) during ``predict``, and for a video
the video with its boxes drawn and the detections of every frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ...datasets.video import batch_frames
from ...pictures.detection import draw_detections, save_image
from ...pictures.video import VideoPredictions
from ..datamodule import dataset_value, stream_video_predictions
from ..distributed import gather_per_image
from ..predicted_images import to_displayed, working_image
from .evaluation import array_to_results, detections_to_array


class DetectionPredictionWriter(BasePredictionWriter):
    """Writes what ``predict`` finds: one picture per image with its boxes, and ``predictions.json``.

    Expects ``DetectionTask.predict_step``'s output: per image a dict with ``boxes (D, 4)`` xyxy in the pixels of
    the image as read (``orig_size``), ``scores``, ``labels`` in 1..K, ``path`` (the image file) and ``image_id``.
    The JSON is a COCO results list in the displayed image's pixels (EXIF orientation applied; an image read scaled
    down to ``predict_max_pixels`` has its boxes scaled back, :mod:`mobilenetv2_dense.tasks.predicted_images`),
    category ids mapped back through ``datamodule.label_to_cat_id``, ``file_name`` added, that ``COCO.loadRes``
    reads; under DDP rank 0 writes it for all ranks. Images that belong to the datamodule's val images (same file)
    get their COCO image ids, other images their index in the predict folder. Pictures are drawn on the image as
    read (the full image, or the scaled-down copy of one over ``predict_max_pixels``).

    For video frames (``predict_images`` names video files) it writes, per video, ``<stem>.mp4`` (the frames with
    their boxes, at the source's frame rate and size) and ``<stem>.frames.json``: per frame ``frame``, ``time``
    (seconds) and ``detections``, each a COCO result (``bbox`` ``[x, y, w, h]`` in frame pixels, ``category_id``,
    ``score``) with its ``category`` name, every detection kept (:mod:`mobilenetv2_dense.pictures.video`). Video
    frames are not in ``predictions.json``, which a run on videos alone does not write.

    Args:
        output_dir: folder for the pictures and the JSON (created).
        score_thresh: boxes drawn from this score up; the JSON keeps every detection.
        max_images: draw at most this many pictures (``None``: all); the JSON covers every image. Videos are drawn
            whole.
        image_format: ``"jpg"`` or ``"png"``.
        write_interval: pictures are written per batch; the JSON always at the end of the epoch.
    """

    def __init__(self, output_dir: str = "predictions", score_thresh: float = 0.3, max_images: int | None = None,
                 image_format: Literal["jpg", "png"] = "jpg",
                 write_interval: Literal["batch", "batch_and_epoch"] = "batch") -> None:
        super().__init__(write_interval)
        self.output_dir = Path(output_dir)
        self.score_thresh = score_thresh
        self.max_images = max_images
        self.image_format = image_format
        self._arrays: list[np.ndarray] = []
        self._files: dict[int, str] = {}
        self._drawn = 0
        self._coco_ids: dict[str, int] = {}
        self.videos = VideoPredictions(self.output_dir)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._arrays, self._files, self._drawn = [], {}, 0
        self._coco_ids = _val_image_ids(trainer.datamodule)
        self.videos = VideoPredictions(self.output_dir)
        stream_video_predictions(trainer)

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: list[dict[str, Any]],
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        class_names, label_to_cat_id = _label_set(trainer, pl_module)
        frames = batch_frames(batch)
        if frames is not None:
            for pred, frame in zip(prediction, frames):
                self.videos.add(frame, self.picture(pred, class_names, frame.image),
                                self.frame_record(pred, class_names, label_to_cat_id))
            return
        # Files of the val set keep their COCO image ids, so the JSON evaluates against val_coco directly.
        image_ids = [self._coco_ids.get(str(Path(p["path"]).resolve()), int(p["image_id"])) for p in prediction]
        displayed = [to_displayed(p) for p in prediction]  # the files in the displayed image's pixels
        self._arrays.append(detections_to_array(displayed, image_ids, label_to_cat_id))
        for pred, image_id, shown in zip(prediction, image_ids, displayed):
            self._files[image_id] = str(pred["path"])
            self.write_image_files(shown)
            if self.max_images is not None and self._drawn >= self.max_images:
                continue
            save_image(self.picture(pred, class_names),
                       self.output_dir / f"{Path(pred['path']).stem}.{self.image_format}")
            self._drawn += 1

    def write_image_files(self, prediction: dict[str, Any]) -> None:
        """Files of one image beside its picture and its ``predictions.json`` entries, from its prediction in the
        displayed image's pixels: none here (the joint writer's masks)."""

    def picture(self, prediction: dict[str, Any], class_names: list[str] | None,
                image: np.ndarray | None = None) -> Tensor:
        """One image's picture, ``(3, H, W)`` uint8: its boxes from ``score_thresh`` up, drawn on ``image`` (a video
        frame, ``(H, W, 3)`` uint8 RGB), else on the image file read again at the size predict read it."""
        image = working_image(prediction["path"], prediction["orig_size"]) if image is None else image
        return draw_detections(image, prediction["boxes"], prediction["labels"], prediction["scores"],
                               class_names=class_names, score_thresh=self.score_thresh)

    def frame_record(self, prediction: dict[str, Any], class_names: list[str] | None,
                     label_to_cat_id: dict[int, int] | None) -> dict[str, Any]:
        """A video frame's entry in ``<stem>.frames.json`` (besides ``frame`` and ``time``): ``{"detections":
        [{"bbox", "category_id", "category", "score"}, ...]}``, every detection, category ids as in
        ``predictions.json``."""
        results = array_to_results(detections_to_array([prediction], [0], label_to_cat_id))
        names = [class_names[k - 1] if class_names and 0 < k <= len(class_names) else str(k)
                 for k in prediction["labels"].tolist()]
        return {"detections": [{"bbox": r["bbox"], "category_id": r["category_id"], "category": name,
                                "score": r["score"]} for r, name in zip(results, names)]}

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        self.videos.close()
        local = np.concatenate(self._arrays) if self._arrays else np.zeros((0, 7))
        array, files = gather_per_image(local, self._files)  # all ranks, each image once
        if trainer.global_rank != 0:
            return
        if self.videos.written:
            rank_zero_info(f"{type(self).__name__}: {self.videos.summary()} in {self.output_dir}")
            if not files:
                return  # videos alone: no COCO results to write
        results = array_to_results(array)
        for result in results:
            result["file_name"] = Path(files[result["image_id"]]).name
        path = self.output_dir / "predictions.json"
        path.write_text(json.dumps(results))
        rank_zero_info(f"{type(self).__name__}: {len(files)} images, {len(results)} detections -> {path}; "
                       f"{self._drawn} pictures in {self.output_dir}")

    def write_on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        """The JSON is written in :meth:`on_predict_epoch_end` whatever the interval; nothing more to do."""

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.videos.close()  # the frames predicted before the error stay a playable video and valid JSON


def _label_set(trainer: Trainer, pl_module: LightningModule) -> tuple[list[str] | None, dict[int, int] | None]:
    """Class names of labels 1..K and label -> category id: the task's (from its data or its checkpoint), else the
    data module's."""
    labels = getattr(pl_module, "labels", None)
    names, cat_ids = getattr(labels, "class_names", None), getattr(labels, "label_to_cat_id", None)
    if names is None or cat_ids is None:
        names = names or dataset_value(trainer.datamodule, "class_names")
        cat_ids = cat_ids or dataset_value(trainer.datamodule, "label_to_cat_id")
    return (list(names) if names else None), cat_ids


def _val_image_ids(datamodule: Any) -> dict[str, int]:
    """Resolved file path -> COCO image id of the datamodule's val images (a COCO-format val set on disk), else {}."""
    folder = (getattr(datamodule, "paths", None) or {}).get("val_images")
    if folder is None or not Path(folder).is_dir():
        return {}
    coco = datamodule.val_coco
    return {str((Path(folder) / image["file_name"]).resolve()): int(image["id"]) for image in coco.dataset["images"]}
