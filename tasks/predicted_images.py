"""What the prediction writers share for image files: from the pixels ``predict`` worked in to the displayed image's.

``predict`` reads each image at its working size (:class:`mobilenetv2_dense.datasets.images.PredictImages`): the
displayed size (EXIF orientation applied), or for an image over ``predict_max_pixels`` that size scaled down.
``predict_step`` answers in those pixels (``orig_size``, boxes, masks); the files the writers write are in the
displayed image's pixels (boxes scaled, masks resized by nearest neighbour), while pictures and overlays, made for
looking at, are drawn on the working copy (the full image for every image under the limit).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from ..datasets.images import displayed_size, large_images_allowed, read_rgb


def boxes_to_size(boxes: Tensor, working: tuple[int, int], displayed: tuple[int, int]) -> Tensor:
    """``(D, 4)`` xyxy boxes in the pixels of a ``working`` ``(h, w)`` image -> pixels of the ``displayed``
    ``(H, W)`` one (x by ``W / w``, y by ``H / h``)."""
    if tuple(working) == tuple(displayed):
        return boxes
    (h, w), (height, width) = working, displayed
    return boxes * boxes.new_tensor([width / w, height / h, width / w, height / h])  # (D, 4) * (4,)


def mask_to_size(mask: np.ndarray | Tensor, displayed: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` uint8 labels -> ``(H, W)`` = ``displayed``, by nearest neighbour (labels are not blended)."""
    mask = mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if mask.shape == tuple(displayed):
        return mask
    # OpenCV's resize rather than PIL's: the faster on the 100-Mpx masks this is for
    return cv2.resize(mask.astype(np.uint8), displayed[::-1], interpolation=cv2.INTER_NEAREST)


def to_displayed(prediction: dict, displayed: tuple[int, int] | None = None) -> dict:
    """A detection ``prediction`` (``boxes``, ``orig_size`` = its working ``(h, w)``, ``path``, optionally ``mask``)
    in the pixels of the displayed image (``displayed``: read from the file's header when ``None``)."""
    working = tuple(int(v) for v in prediction["orig_size"])
    displayed = displayed_size(prediction["path"]) if displayed is None else tuple(displayed)
    if working == displayed:
        return prediction
    out = {**prediction, "boxes": boxes_to_size(prediction["boxes"], working, displayed),
           "orig_size": torch.as_tensor(displayed)}
    if "mask" in prediction:
        out["mask"] = torch.from_numpy(mask_to_size(prediction["mask"], displayed))
    return out


def working_image(path: str | Path, working: tuple[int, int] | Tensor) -> np.ndarray:
    """The ``(h, w, 3)`` uint8 RGB image ``predict`` saw for ``path`` at its ``working`` ``(h, w)``, to draw on."""
    with large_images_allowed():
        return read_rgb(path, size=tuple(int(v) for v in working))
