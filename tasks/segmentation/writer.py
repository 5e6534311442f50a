"""The callback that writes segmentation predictions during ``predict``.

It produces what the PASCAL VOC evaluation server takes (palette-mode index PNGs, one per image,
named after it) and an overlay per image for a human to look at; for a video, the overlaid video and the pixels of
each class per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ...datasets.images import displayed_size
from ...datasets.video import batch_frames
from ...pictures.segmentation import overlay_mask, save_index_png, save_overlay
from ...pictures.video import VideoPredictions, class_pixels
from ..datamodule import dataset_value, stream_video_predictions
from ..predicted_images import mask_to_size, working_image


class SegmentationPredictionWriter(BasePredictionWriter):
    """Writes, during ``predict``, ``<output_dir>/masks/<image stem>.png`` (palette index PNGs, VOC format) and
    ``<output_dir>/overlays/<image stem>.<overlay_format>`` (colours blended on the original image).

    Expects ``predict_step`` to return a list of ``(h, w)`` index masks at each image's size as read, and the
    predict batch to carry ``"paths"`` (the contract of :mod:`mobilenetv2_dense.datasets.segmentation.dataset`).
    The index PNGs have the displayed image's size (EXIF orientation applied; the mask of an image read scaled down
    to ``predict_max_pixels`` is resized back by nearest neighbour); overlays are drawn on the image as read (the
    full image, or that scaled-down copy: an overlay of 108 Mpx would take gigabytes). Each DDP rank writes the
    images it predicted.

    For video frames (``predict_images`` names video files) it writes, per video, ``<output_dir>/<stem>.mp4`` (the
    colour overlay on every frame, at the source's frame rate and size; not with ``overlays=False``) and
    ``<output_dir>/<stem>.frames.json``: per frame ``frame``, ``time`` (seconds) and ``pixels``, ``{class name:
    pixels}`` of the classes in its mask (:mod:`mobilenetv2_dense.pictures.video`); no PNG per frame.

    Args:
        output_dir: where the two folders go.
        overlays: also write overlays (off for a submission run).
        alpha: opacity of the class colours in the overlays.
        overlay_format: ``"jpg"`` (small) or ``"png"`` (exact).
    """

    def __init__(self, output_dir: str = "predictions", *, overlays: bool = True, alpha: float = 0.5,
                 overlay_format: Literal["jpg", "png"] = "jpg") -> None:
        super().__init__(write_interval="batch")
        if not 0 <= alpha <= 1:
            raise ValueError(f"SegmentationPredictionWriter: alpha must be in [0, 1], got {alpha}")
        self.output_dir = Path(output_dir)
        self.overlays = overlays
        self.alpha = alpha
        self.overlay_format = overlay_format
        self.written = 0
        self.videos = VideoPredictions(self.output_dir)
        self.class_names: list[str] | None = None
        self.palette: np.ndarray | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written = 0
        self.videos = VideoPredictions(self.output_dir)
        names = getattr(pl_module, "class_names", None) or dataset_value(trainer.datamodule, "class_names")
        self.class_names = list(names) if names else None
        # The data's own class colours where it has them (colour masks), else the VOC palette.
        self.palette = dataset_value(trainer.datamodule, "palette")
        stream_video_predictions(trainer)

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Sequence[Tensor],
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        if not isinstance(batch, dict) or "paths" not in batch:
            raise TypeError("SegmentationPredictionWriter needs predict batches as dicts with 'paths' "
                            "(mobilenetv2_dense.datasets.segmentation.dataset.predict_collate makes them)")
        frames = batch_frames(batch)
        for i, (mask, path) in enumerate(zip(prediction, batch["paths"])):
            stem = Path(path).stem
            mask = mask.cpu().numpy()
            if frames is not None:
                picture = (overlay_mask(frames[i].image, mask, alpha=self.alpha, palette=self.palette)
                           if self.overlays else None)
                self.videos.add(frames[i], picture, {"pixels": class_pixels(mask, self.class_names)})
                continue
            save_index_png(mask_to_size(mask, displayed_size(path)), self.output_dir / "masks" / f"{stem}.png",
                           self.palette)
            if self.overlays:
                save_overlay(working_image(path, mask.shape), mask,
                             self.output_dir / "overlays" / f"{stem}.{self.overlay_format}", alpha=self.alpha,
                             palette=self.palette)
            self.written += 1

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.videos.close()
        if self.videos.written:
            rank_zero_info(f"SegmentationPredictionWriter: {self.videos.summary()} in {self.output_dir.resolve()}")
        if self.written or not self.videos.written:
            what = "masks and overlays" if self.overlays else "masks"
            rank_zero_info(f"SegmentationPredictionWriter: wrote {what} of {self.written} images under "
                           f"{self.output_dir.resolve()}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.videos.close()  # the frames predicted before the error stay a playable video and valid JSON
