"""The deployed graphs: what an exported file computes, from ``[0, 1]`` RGB images to final outputs.

Each wrapper puts the mean/std normalisation inside the graph and, for detection, the whole post-processing
(scores, top-k candidates, box decoding, clipping, class-wise NMS, padding to a fixed count), written with
static-shape tensor ops only, so that the same module exports to ONNX and to ExecuTorch and its outputs can be
compared with the eager model's number for number.

The output contract (docs/export.md); each graph states its own as the sidecar's JSON with ``outputs()`` (names,
shapes, dtypes in output order) and ``contract()`` (the task, whether H and W are dynamic, the outputs and the
task's settings):

- detection, fixed H and W: ``boxes (N, D, 4)`` xyxy input pixels, ``scores (N, D)``, ``labels (N, D)`` int64
  category ids of the dataset, ``num_detections (N,)`` int64; rows past ``num_detections`` are zero.
  ``D = detections_per_img``. Settings: ``post_processing``, ``anchors``.
- segmentation, dynamic H and W: ``logits (N, K, H, W)``, or ``labels (N, H, W)`` int64 with ``argmax=True``.
  Settings: ``output_stride``.
- joint, fixed H and W: the detection outputs, then ``seg_logits (N, K_seg, H, W)`` or ``seg_labels (N, H, W)``
  int64. Settings: the detection's and ``output_stride``.
- classification, dynamic H and W from ``min_size`` 64: ``logits (N, K)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..models.deeplab import DeepLabV3
from ..models.joint import SSDLiteDeepLabV3
from ..models.ssdlite import SSDLite


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, on ``(N, 3, H, W)`` images in ``[0, 1]``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std


class Network(nn.Module):
    """The model's network alone, tensors in and out: what int8 quantisation replaces (``deploy/quantize.py``).

    ``forward(normalised images)`` -> SSDLite's ``(bbox_regression, cls_logits)``, the joint model's
    ``(bbox_regression, cls_logits, segmentation logits)``, DeepLabV3's ``out`` logits or a classifier's ``logits``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, ...]:
        if isinstance(self.model, SSDLiteDeepLabV3):
            features = self.model.backbone(images)  # once, for both heads
            out = self.model.head(features)
            return out["bbox_regression"], out["cls_logits"], self.model.segment(features, images.shape[-2:])
        if isinstance(self.model, SSDLite):
            out = self.model.head(self.model.backbone(images))
            return out["bbox_regression"], out["cls_logits"]
        out = self.model(images)
        return out["out"] if isinstance(self.model, DeepLabV3) else out["logits"]


def output_spec(name: str, shape: list[int | str], dtype: str = "float32") -> dict[str, Any]:
    """One output of a contract: ``{"name", "shape", "dtype"}``, symbolic dimensions ``"N"``, ``"H"``, ``"W"``."""
    return {"name": name, "shape": shape, "dtype": dtype}


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """A normalised ``(N, 3, H, W)`` batch back to the ``[0, 1]`` RGB a deployed graph takes (it normalises inside)."""
    mean_ = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_ = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return images * std_ + mean_


def resize_to(images: Tensor, size: Sequence[int] | None) -> Tensor:
    """``(N, 3, h, w)`` -> ``(N, 3, H, W)`` for a graph fixed at ``size = (H, W)`` (bilinear, antialiased: a
    smaller size averages as an image resize does); unchanged when ``size`` is ``None`` (H and W dynamic) or equal.
    The export's calibration and parity check feed a fixed-size file what it takes with it, where the data module
    cannot give that size itself (the detection data modules resize to a square)."""
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    return nn.functional.interpolate(images, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False,
                                     antialias=True)


def pairwise_iou(boxes: Tensor) -> Tensor:
    """``(N, T, 4)`` xyxy -> ``(N, T, T)`` IoU of every pair within an image (torchvision's ``box_iou``, batched)."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # (N, T)
    top_left = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])  # (N, T, T, 2)
    bottom_right = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area[:, :, None] + area[:, None, :] - inter)


def greedy_nms_mask(boxes: Tensor, labels: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Class-wise greedy NMS on candidates sorted best first, as a keep mask with the input's shape.

    ``boxes (N, T, 4)``, ``labels (N, T)``, ``valid (N, T)`` bool (candidates above the score threshold) ->
    ``(N, T)`` bool. Candidate ``j`` is dropped when a kept, better candidate ``i < j`` of its class overlaps it with
    IoU > ``iou_threshold``: torchvision's ``batched_nms``. The scan over ``i`` is unrolled (T static steps of
    ``(N, T)`` logic) instead of a data-dependent loop, so ONNX and ExecuTorch get a fixed-shape graph.
    """
    num = boxes.shape[1]
    later = torch.ones(num, num, dtype=torch.bool, device=boxes.device).triu(1)  # i < j
    suppresses = (pairwise_iou(boxes) > iou_threshold) & (labels[:, :, None] == labels[:, None, :]) & later
    keep = valid
    for i in range(num):
        keep = keep & ~(suppresses[:, i] & keep[:, i:i + 1])
    return keep


class DetectorGraph(nn.Module):
    """:class:`mobilenetv2_dense.models.SSDLite` + normalisation + post-processing, for one fixed input size.

    ``forward(images (N, 3, H, W) in [0, 1])`` -> ``(boxes (N, D, 4), scores (N, D), labels (N, D) int64 category
    ids, num_detections (N,) int64)``; equal to ``model.predict`` on normalised images (same boxes, scores and
    labels, best first), with labels 1..K mapped to ``category_ids[k - 1]``.

    Args:
        model: the detector (its ``post_processing`` and ``classification`` are used).
        image_size: ``(H, W)`` the graph is built for (the anchors are constants of it).
        mean, std: the data's normalisation.
        category_ids: the dataset's id of labels 1..K (``None``: the labels themselves).
    """

    task = "detection"

    def __init__(self, model: SSDLite, image_size: tuple[int, int], *, mean: Sequence[float],
                 std: Sequence[float], category_ids: Sequence[int] | None = None) -> None:
        super().__init__()
        self.model = model  # its settings and box coder; the convolutions run in ``network``
        self.network = Network(model)
        self.normalize = Normalize(mean, std)
        self.image_size = tuple(int(s) for s in image_size)
        ids = list(range(1, model.num_classes + 1)) if category_ids is None else [int(c) for c in category_ids]
        if len(ids) != model.num_classes:
            raise ValueError(f"DetectorGraph: {len(ids)} category ids for a detector of {model.num_classes} classes")
        self.register_buffer("category_ids", torch.tensor([0, *ids], dtype=torch.int64))  # index 0: padding
        training = model.training
        with torch.no_grad():  # the anchors of this input size, as the eager model computes them
            probe = next(model.parameters())
            anchors = model.eval()(torch.zeros(1, 3, *self.image_size, device=probe.device))["anchors"]
        model.train(training)
        self.register_buffer("anchors", anchors.float().clone())

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        regression, logits = self.network(self.normalize(images))
        return self.detections(regression, logits)

    def outputs(self) -> list[dict[str, Any]]:
        """:meth:`forward`'s outputs, ``D = detections_per_img``."""
        d = self.model.post_processing.detections_per_img
        return [output_spec("boxes", ["N", d, 4]), output_spec("scores", ["N", d]),
                output_spec("labels", ["N", d], "int64"), output_spec("num_detections", ["N"], "int64")]

    def contract(self) -> dict[str, Any]:
        """``{"task", "dynamic_size": False, "outputs", "post_processing", "anchors"}``: H and W are fixed because
        the anchors are constants of ``image_size``; ``anchors`` gives their generator's settings, for a reader."""
        model = self.model
        return {"task": self.task, "dynamic_size": False, "outputs": self.outputs(),
                "post_processing": {**dataclasses.asdict(model.post_processing),
                                    "classification": model.classification, "nms": "class-wise, greedy"},
                "anchors": model.anchor_settings.plain()}

    def detections(self, regression: Tensor, logits: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The network's ``bbox_regression (N, A, 4)`` and ``cls_logits (N, A, K + 1)`` -> :meth:`forward`'s outputs."""
        model = self.model
        device = regression.device
        regression, logits = regression.float(), logits.float()
        if model.classification == "softmax":
            scores = logits.softmax(dim=-1)[..., 1:]  # (N, A, K): background dropped
        else:
            scores = logits[..., 1:].sigmoid()
        num_classes = scores.shape[-1]
        flat = scores.flatten(1)  # (N, A*K)
        post = model.post_processing
        top_scores, top_index = flat.topk(min(post.topk_candidates, flat.shape[1]), dim=1)  # (N, T), best first
        anchor_index = torch.div(top_index, num_classes, rounding_mode="floor")
        labels = top_index % num_classes + 1  # 1..K
        codes = regression.gather(1, anchor_index[:, :, None].expand(-1, -1, 4))  # (N, T, 4)
        boxes = model.box_coder.decode(codes, self.anchors[anchor_index])
        height, width = self.image_size
        limits = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        boxes = torch.minimum(boxes.clamp(min=0), limits)  # clip to the image

        keep = greedy_nms_mask(boxes, labels, top_scores > post.score_thresh, post.nms_thresh)
        # The D best kept candidates, best first; -1 marks the dropped ones (every score is >= 0).
        count = min(post.detections_per_img, keep.shape[1])
        kept_scores, order = torch.where(keep, top_scores, -1.0).topk(count, dim=1)
        num_detections = keep.sum(dim=1).clamp(max=count)
        filled = torch.arange(count, device=device)[None] < num_detections[:, None]  # (N, D)
        boxes = boxes.gather(1, order[:, :, None].expand(-1, -1, 4)) * filled[:, :, None]
        scores = kept_scores * filled
        labels = self.category_ids[labels.gather(1, order) * filled]
        pad = post.detections_per_img - count  # fewer candidates than D (tiny inputs): zero rows
        if pad:
            boxes = nn.functional.pad(boxes, (0, 0, 0, pad))
            scores, labels = nn.functional.pad(scores, (0, pad)), nn.functional.pad(labels, (0, pad))
        return boxes, scores, labels, num_detections.to(torch.int64)


class JointGraph(DetectorGraph):
    """:class:`mobilenetv2_dense.models.SSDLiteDeepLabV3` + normalisation + the detector's post-processing, for one
    fixed input size: one network run gives :class:`DetectorGraph`'s four outputs and the segmentation ``logits
    (N, K_seg, H, W)``, or ``labels (N, H, W)`` int64 with ``argmax``. Arguments as :class:`DetectorGraph`'s."""

    task = "joint"

    def __init__(self, model: SSDLiteDeepLabV3, image_size: tuple[int, int], *, mean: Sequence[float],
                 std: Sequence[float], category_ids: Sequence[int] | None = None, argmax: bool = False) -> None:
        super().__init__(model, image_size, mean=mean, std=std, category_ids=category_ids)
        self.argmax = argmax

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        regression, logits, segmentation = self.network(self.normalize(images))
        return (*self.detections(regression, logits), segmentation.argmax(1) if self.argmax else segmentation)

    def outputs(self) -> list[dict[str, Any]]:
        """:class:`DetectorGraph`'s outputs, then ``seg_logits (N, K_seg, H, W)`` or ``seg_labels (N, H, W)``."""
        height, width = self.image_size
        segmentation = (output_spec("seg_labels", ["N", height, width], "int64") if self.argmax else
                        output_spec("seg_logits", ["N", self.model.num_seg_classes, height, width]))
        return [*super().outputs(), segmentation]

    def contract(self) -> dict[str, Any]:
        """:meth:`DetectorGraph.contract` with this task and outputs, and the backbone's ``output_stride``."""
        return {**super().contract(), "output_stride": self.model.backbone.output_stride}


class SegmenterGraph(nn.Module):
    """:class:`mobilenetv2_dense.models.DeepLabV3` + normalisation: ``images (N, 3, H, W) in [0, 1]`` ->
    ``logits (N, K, H, W)``, or ``labels (N, H, W)`` int64 with ``argmax``."""

    task = "segmentation"

    def __init__(self, model: DeepLabV3, *, mean: Sequence[float], std: Sequence[float], argmax: bool = False) -> None:
        super().__init__()
        self.network, self.normalize, self.argmax = Network(model), Normalize(mean, std), argmax

    def forward(self, images: Tensor) -> Tensor:
        logits = self.network(self.normalize(images))
        return logits.argmax(1) if self.argmax else logits

    def outputs(self) -> list[dict[str, Any]]:
        """:meth:`forward`'s one output, ``labels`` or ``logits``."""
        if self.argmax:
            return [output_spec("labels", ["N", "H", "W"], "int64")]
        return [output_spec("logits", ["N", self.network.model.num_classes, "H", "W"])]

    def contract(self) -> dict[str, Any]:
        """``{"task", "dynamic_size": True, "outputs", "output_stride"}``: any H and W, since the head upsamples to
        the input; ``output_stride`` is the backbone's, which sets the logits' resolution before that upsampling."""
        return {"task": self.task, "dynamic_size": True, "outputs": self.outputs(),
                "output_stride": self.network.model.output_stride}


class ClassifierGraph(nn.Module):
    """A MobileNetV2 classifier + normalisation: ``images (N, 3, H, W) in [0, 1]`` -> ``logits (N, K)``."""

    task = "classification"
    # The smallest H and W: at 32 or less the last feature map is 1x1, a size ``torch.export`` specialises.
    min_size = 64

    def __init__(self, model: nn.Module, *, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.network, self.normalize = Network(model), Normalize(mean, std)

    def forward(self, images: Tensor) -> Tensor:
        return self.network(self.normalize(images))

    def outputs(self) -> list[dict[str, Any]]:
        """:meth:`forward`'s one output, ``logits (N, K)``."""
        return [output_spec("logits", ["N", self.network.model.num_classes])]

    def contract(self) -> dict[str, Any]:
        """``{"task", "dynamic_size": True, "min_size", "outputs"}``: any H and W from ``min_size``, since the
        network pools globally before its classifier."""
        return {"task": self.task, "dynamic_size": True, "min_size": self.min_size, "outputs": self.outputs()}
