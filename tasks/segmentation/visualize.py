"""Seeing segmentation results: colour overlays in the VOC palette, and a predict-time writer.

The writer produces what the PASCAL VOC evaluation server takes (palette-mode index PNGs, one per image,
named after it) and an overlay per image for a human to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor

from ...datasets.images import read_rgb
from ...datasets.segmentation.voc import IGNORE_INDEX, VOC_PALETTE, save_palette_png


def overlay_mask(image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.5,
                 palette: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend class colours on an image: ``(H, W, 3)`` uint8 + ``(H, W)`` indices -> ``(H, W, 3)`` uint8.

    Background (0) and void (255) pixels keep the image's colours, so only the objects are tinted.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"overlay_mask: image is {image.shape[:2]} but mask is {mask.shape}; pass the mask at the "
                         "image's original size (crop the padding of a batched prediction first)")
    palette = VOC_PALETTE if palette is None else palette
    colours = palette[mask.astype(np.int64)].astype(np.float32)  # (H, W) -> (H, W, 3)
    tinted = (mask != 0) & (mask != IGNORE_INDEX)
    out = image.astype(np.float32)
    out[tinted] = (1 - alpha) * out[tinted] + alpha * colours[tinted]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def save_index_png(mask: np.ndarray | Tensor, path: str | Path) -> Path:
    """Save ``(H, W)`` class indices as a palette-mode PNG with the VOC palette (the VOC submission format)."""
    if isinstance(mask, Tensor):
        mask = mask.cpu().numpy()
    if mask.ndim != 2 or mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise ValueError(f"save_index_png({str(path)!r}): expected (H, W) indices in 0..255, got shape "
                         f"{mask.shape} with values {mask.min(initial=0)}..{mask.max(initial=0)}")
    return save_palette_png(mask.astype(np.uint8), path)


def save_overlay(image: np.ndarray, mask: np.ndarray | Tensor, path: str | Path, *, alpha: float = 0.5) -> Path:
    """Write :func:`overlay_mask` of ``image`` and ``mask`` to ``path`` (JPEG or PNG, from the suffix)."""
    if isinstance(mask, Tensor):
        mask = mask.cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_mask(image, mask, alpha=alpha)).save(path, **({"quality": 92} if path.suffix.lower()
                                                                          in (".jpg", ".jpeg") else {}))
    return path


class SegmentationPredictionWriter(BasePredictionWriter):
    """Writes, during ``predict``, ``<output_dir>/masks/<image stem>.png`` (palette index PNGs, VOC format) and
    ``<output_dir>/overlays/<image stem>.<overlay_format>`` (colours blended on the original image).

    Expects ``predict_step`` to return a list of ``(h, w)`` index masks at each image's original size, and
    the predict batch to carry ``"paths"`` (the contract of :mod:`mobilenetv2_dense.datasets.segmentation.dataset`).
    Each DDP rank writes the images it predicted.

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

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.written = 0

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Sequence[Tensor],
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        if not isinstance(batch, dict) or "paths" not in batch:
            raise TypeError("SegmentationPredictionWriter needs predict batches as dicts with 'paths' "
                            "(mobilenetv2_dense.datasets.segmentation.dataset.predict_collate makes them)")
        for mask, path in zip(prediction, batch["paths"]):
            stem = Path(path).stem
            mask = mask.cpu().numpy()
            save_index_png(mask, self.output_dir / "masks" / f"{stem}.png")
            if self.overlays:
                save_overlay(read_rgb(path), mask, self.output_dir / "overlays" / f"{stem}.{self.overlay_format}",
                             alpha=self.alpha)
            self.written += 1

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        what = "masks and overlays" if self.overlays else "masks"
        rank_zero_info(f"SegmentationPredictionWriter: wrote {what} of {self.written} images under "
                       f"{self.output_dir.resolve()}")
