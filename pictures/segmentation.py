"""Segmentation pictures: masks as palette PNGs (the data's class colours, VOC's by default), overlays on the
image, and what ``validate`` / ``test`` write next to the per-class IoU table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from ..datasets.segmentation.voc import IGNORE_INDEX, VOC_PALETTE, save_palette_png
from .charts import plot_confusion_matrix, plot_iou_bars


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


def save_index_png(mask: np.ndarray | Tensor, path: str | Path, palette: np.ndarray | None = None) -> Path:
    """Save ``(H, W)`` class indices as a palette-mode PNG: the data's ``(256, 3)`` uint8 ``palette``, by default the
    VOC palette (the VOC submission format)."""
    if isinstance(mask, Tensor):
        mask = mask.cpu().numpy()
    if mask.ndim != 2 or mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise ValueError(f"save_index_png({str(path)!r}): expected (H, W) indices in 0..255, got shape "
                         f"{mask.shape} with values {mask.min(initial=0)}..{mask.max(initial=0)}")
    return save_palette_png(mask.astype(np.uint8), path, palette)


def save_overlay(image: np.ndarray, mask: np.ndarray | Tensor, path: str | Path, *, alpha: float = 0.5,
                 palette: np.ndarray | None = None) -> Path:
    """Write :func:`overlay_mask` of ``image`` and ``mask`` to ``path`` (JPEG or PNG, from the suffix)."""
    if isinstance(mask, Tensor):
        mask = mask.cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 92} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(overlay_mask(image, mask, alpha=alpha, palette=palette)).save(path, **options)
    return path


def write_segmentation_pictures(folder: Path, scores: Mapping[str, Tensor], class_names: Sequence[str], *,
                                prefix: str = "") -> list[Path]:
    """``<prefix>iou_per_class.png`` (bars, mIoU in the title) and ``<prefix>confusion_matrix.png`` (pixels,
    row-normalised, rows = true class) in ``folder``, from :class:`SegmentationMetrics`' ``scores`` (``iou (K,)``,
    ``miou``, ``confmat (K, K)``). The joint task passes ``prefix="seg_"`` to keep the detector's confusion matrix."""
    return [plot_iou_bars(scores["iou"], class_names, folder / f"{prefix}iou_per_class.png",
                          title=f"IoU per class (mIoU {100 * float(scores['miou']):.2f})"),
            plot_confusion_matrix(scores["confmat"], class_names, folder / f"{prefix}confusion_matrix.png",
                                  title="confusion matrix (pixels; rows: true class)")]
