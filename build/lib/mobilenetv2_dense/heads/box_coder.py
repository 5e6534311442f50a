"""SSD / Faster R-CNN box coding: offsets of a box relative to an anchor, scaled by ``weights``.

The maths of ``torchvision.models.detection._utils.BoxCoder`` (and TF's ``FasterRcnnBoxCoder`` with
``scale_factors (10, 10, 5, 5)``, the paper's SSDLite setting), written over arbitrary leading dims so one call
codes a whole batch ``(N, A, 4)`` against ``(A, 4)`` anchors by broadcasting.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


class BoxCoder:
    """Encode xyxy boxes as ``(dx, dy, dw, dh)`` w.r.t. anchors and back.

    ``encode(gt (..., 4), anchors (..., 4)) -> (..., 4)``; ``decode(codes (..., 4), anchors (..., 4)) -> (..., 4)``
    xyxy. Shapes broadcast, e.g. codes ``(N, A, 4)`` with anchors ``(A, 4)``. ``dw``/``dh`` are clamped at
    ``bbox_xform_clip`` before ``exp`` on decode so that an untrained head cannot overflow.
    """

    def __init__(self, weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
                 bbox_xform_clip: float = math.log(1000.0 / 16)) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def __repr__(self) -> str:
        return f"BoxCoder(weights={self.weights})"

    def encode(self, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
        """Regression targets ``(..., 4)`` that move ``anchors`` onto ``gt_boxes`` (both xyxy, non-degenerate)."""
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = _centre_size(anchors.to(gt_boxes.dtype))
        gx, gy, gw, gh = _centre_size(gt_boxes)
        return torch.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah,
                            ww * torch.log(gw / aw), wh * torch.log(gh / ah)], dim=-1)

    def decode(self, rel_codes: Tensor, anchors: Tensor) -> Tensor:
        """Boxes ``(..., 4)`` xyxy from predicted offsets ``rel_codes`` and their ``anchors``."""
        wx, wy, ww, wh = self.weights
        ax, ay, aw, ah = _centre_size(anchors.to(rel_codes.dtype))
        dw = (rel_codes[..., 2] / ww).clamp(max=self.bbox_xform_clip)
        dh = (rel_codes[..., 3] / wh).clamp(max=self.bbox_xform_clip)
        cx = rel_codes[..., 0] / wx * aw + ax
        cy = rel_codes[..., 1] / wy * ah + ay
        half_w, half_h = 0.5 * torch.exp(dw) * aw, 0.5 * torch.exp(dh) * ah
        return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)
