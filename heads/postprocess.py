"""From SSD outputs to detections: scores, top-k candidates, box decoding, clipping and per-class NMS."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

from .box_coder import BoxCoder


@dataclass
class PostProcessing:
    """How SSD outputs become detections (see :func:`postprocess_detections`), one block for the model, the tasks'
    YAML and the export sidecar.

    Treated as a value: changes go through :meth:`replace`, never by assigning a field (not frozen, because
    Lightning rebuilds hyper-parameter dataclasses field by field when it writes ``hparams.yaml``).

    Args:
        score_thresh: (anchor, class) pairs scoring at or below it are dropped before NMS.
        nms_thresh: IoU above which per-class NMS drops the lower-scoring box.
        detections_per_img: detections kept per image, best first (COCO's maxDets is 100).
        topk_candidates: (anchor, class) pairs per image decoded and passed to NMS; 3 x ``detections_per_img`` by
            default, where mAP and AR@100 stop changing (``python -m benchmarks.detection_topk`` sweeps it).
    """

    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    detections_per_img: int = 100
    topk_candidates: int = 300

    def __post_init__(self) -> None:
        if not 0 <= self.score_thresh < 1:
            raise ValueError(f"PostProcessing: score_thresh must be in [0, 1), got {self.score_thresh}")
        if not 0 < self.nms_thresh <= 1:
            raise ValueError(f"PostProcessing: nms_thresh must be in (0, 1], got {self.nms_thresh}")
        if self.detections_per_img < 1 or self.topk_candidates < 1:
            raise ValueError(f"PostProcessing: detections_per_img and topk_candidates must be >= 1, got "
                             f"{self.detections_per_img} and {self.topk_candidates}")

    def replace(self, **changes: Any) -> PostProcessing:
        """These settings with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# Tasks keep their PostProcessing in their hyper-parameters: checkpoints must load with weights_only=True.
torch.serialization.add_safe_globals([PostProcessing])


@torch.no_grad()
def postprocess_detections(
    bbox_regression: Tensor,
    cls_logits: Tensor,
    anchors: Tensor,
    box_coder: BoxCoder,
    *,
    image_size: tuple[int, int],
    settings: PostProcessing = PostProcessing(),
    classification: Literal["softmax", "focal"] = "softmax",
) -> list[dict[str, Tensor]]:
    """Detections per image: ``[{"boxes": (D, 4), "scores": (D,), "labels": (D,) int64 in 1..K}]``.

    ``bbox_regression (N, A, 4)``, ``cls_logits (N, A, K + 1)``, ``anchors (A, 4)`` xyxy pixels of an input of
    ``image_size = (H, W)``. Scores are a softmax over K + 1 (or a sigmoid of the K object logits for a model
    trained with focal loss); every (anchor, class) pair above ``settings.score_thresh`` is a candidate, each image
    keeps its ``topk_candidates`` best, decodes and clips them to the image, runs NMS per class
    (``torchvision.ops.batched_nms``) and keeps ``detections_per_img``, best first. Boxes are in input pixels.
    """
    if classification == "softmax":
        scores = cls_logits.float().softmax(dim=-1)[..., 1:]  # (N, A, K+1) -> (N, A, K): background dropped
    elif classification == "focal":
        scores = cls_logits.float()[..., 1:].sigmoid()  # (N, A, K)
    else:
        raise ValueError(f"postprocess_detections: classification must be 'softmax' or 'focal', got {classification!r}")
    num_images, num_anchors, num_classes = scores.shape

    # Top-k over every (anchor, class) pair of an image at once: (N, A, K) -> (N, A*K) -> (N, T)
    flat = scores.reshape(num_images, -1)
    top_scores, top_index = flat.topk(min(settings.topk_candidates, flat.shape[1]), dim=1)
    anchor_index = torch.div(top_index, num_classes, rounding_mode="floor")  # (N, T)
    labels = top_index % num_classes + 1  # (N, T): back to 1..K

    # Decode only the candidates: (N, A, 4) gathered to (N, T, 4), their anchors (A, 4) -> (N, T, 4)
    codes = bbox_regression.float().gather(1, anchor_index[:, :, None].expand(-1, -1, 4))
    boxes = box_coder.decode(codes, anchors.float()[anchor_index])
    boxes = clip_boxes_to_image(boxes, image_size)

    detections = []
    for image_boxes, image_scores, image_labels in zip(boxes, top_scores, labels):
        keep = image_scores > settings.score_thresh
        image_boxes, image_scores, image_labels = image_boxes[keep], image_scores[keep], image_labels[keep]
        keep = batched_nms(image_boxes, image_scores, image_labels, settings.nms_thresh)[:settings.detections_per_img]
        detections.append({"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": image_labels[keep]})
    return detections
