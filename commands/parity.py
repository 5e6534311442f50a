"""An exported file against the eager model on the data module's validation set: outputs and metrics.

Detection: per image, the same number of detections and the same labels; over the set, the detections paired one
to one (same class, IoU >= 0.5, Hungarian) and the largest box and score differences of the pairs (``None`` and a
reason when nothing pairs); COCO mAP of both through the project's COCOeval. A file of a fixed input size is fed
the validation images at that size.
Segmentation: the share of pixels whose label differs, and mIoU of both; a file of a fixed input size (LiteRT) and
the eager model both see each image resized to it, scored against the mask resized alike (nearest).
Joint: both, from one run of each side.
Classification: top-1 of both and the largest logit difference. The export command writes these figures into the
sidecar JSON; the tests hold them to the contract's tolerances.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import box_iou

from ..deploy.graph import denormalize, resize_to
from ..deploy.runtime import DeployedModel
from ..tasks.classification import ClassificationTask
from ..tasks.detection import DetectionTask
from ..tasks.detection.evaluation import detections_to_array, evaluate_coco, scale_to_original
from ..tasks.joint import JointTask
from ..tasks.joint.loss import logits_by_size
from ..tasks.segmentation import SegmentationTask
from ..tasks.segmentation.metrics import IGNORE_INDEX, confusion_matrix, scores_from_confusion


def _batches(datamodule: Any, max_images: int) -> list:
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    size = loader.batch_size or 1
    return list(islice(loader, -(-max_images // size)))  # whole batches covering max_images


# A deployed detection stands for an eager one when it is of the same class and overlaps it this much (COCO's AP50
# criterion); an int8 file moves boxes by far less, a float file not at all.
MATCH_IOU = 0.5


def match_detections(first: dict[str, Tensor], second: dict[str, Tensor], *,
                     iou_threshold: float = MATCH_IOU) -> tuple[Tensor, Tensor]:
    """One-to-one pairs between two detection sets of one image, ``{"boxes": (D, 4) xyxy, "labels": (D,)}`` each:
    among pairs of the same label overlapping by at least ``iou_threshold``, the assignment of the largest total IoU
    (Hungarian, ``scipy.optimize.linear_sum_assignment``). Returns the paired indices ``(P,)`` into ``first`` and
    into ``second``; a detection of no pair has no counterpart on the other side.

    Pairing by position or by score order would compare two different boxes wherever two scores tie to within the
    runtimes' rounding and swap places; pairing by nearest box alone could pair two detections with one."""
    if not len(first["boxes"]) or not len(second["boxes"]):
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    a, b = first["boxes"].float(), second["boxes"].float()
    # (D1, D2); two identical degenerate boxes (zero area: IoU 0 / 0) are the same detection
    iou = torch.where((a[:, None] == b[None]).all(-1), 1.0, box_iou(a, b).nan_to_num(0.0))
    iou = torch.where((first["labels"][:, None] == second["labels"][None]) & (iou >= iou_threshold), iou, 0.0)
    rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
    rows, cols = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
    paired = iou[rows, cols] > 0  # the assignment also pairs what may not be paired, at no gain: dropped
    return rows[paired], cols[paired]


class DetectionFigures:
    """Detection parity accumulated batch by batch: per image the same count and labels; over the whole set the
    detections paired one to one (:func:`match_detections`) and the largest box and score differences of the pairs;
    both sides' COCO metrics against ``coco_gt``.

    The differences are ``None``, with ``not_comparable`` saying why, while no pair is found: a difference of 0.0
    would claim agreement where nothing was compared."""

    def __init__(self, label_to_cat_id: dict[int, int] | None) -> None:
        self.label_to_cat_id = label_to_cat_id
        self.eager_arrays: list[np.ndarray] = []
        self.deployed_arrays: list[np.ndarray] = []
        self.image_ids: list[int] = []
        self.count_mismatch = self.label_mismatch = self.detections = self.deployed_detections = self.matched = 0
        self.box_diff: float | None = None
        self.score_diff: float | None = None

    def add(self, eager: list[dict[str, Tensor]], exported: list[dict[str, Tensor]], targets: list[dict],
            input_size: tuple[int, int]) -> None:
        """One batch's detections (input pixels, labels 1..K) of the eager model and of the exported file."""
        for e, d in zip(eager, exported):
            self.detections += len(e["scores"])
            self.deployed_detections += len(d["scores"])
            if len(e["scores"]) != len(d["scores"]):
                self.count_mismatch += 1
            elif not torch.equal(e["labels"].sort().values, d["labels"].sort().values):
                self.label_mismatch += 1
            rows, cols = match_detections(e, d)
            if len(rows):
                self.matched += len(rows)
                boxes = float((e["boxes"][rows] - d["boxes"][cols]).abs().max())  # largest coordinate gap, pixels
                scores = float((e["scores"][rows] - d["scores"][cols]).abs().max())
                self.box_diff = boxes if self.box_diff is None else max(self.box_diff, boxes)
                self.score_diff = scores if self.score_diff is None else max(self.score_diff, scores)
        ids = [int(t["image_id"]) for t in targets]
        sizes = [t["orig_size"] for t in targets]
        self.eager_arrays.append(detections_to_array(scale_to_original(eager, input_size, sizes), ids,
                                                     self.label_to_cat_id))
        self.deployed_arrays.append(detections_to_array(scale_to_original(exported, input_size, sizes), ids,
                                                        self.label_to_cat_id))
        self.image_ids += ids

    def comparison(self) -> dict[str, Any]:
        """The detection-by-detection figures: counts, pairs and the pairs' largest differences (``None`` with a
        ``not_comparable`` reason when no pair was found)."""
        figures = {"images": len(self.image_ids), "detections": self.detections,
                   "deployed_detections": self.deployed_detections, "matched_detections": self.matched,
                   "images_with_other_count": self.count_mismatch, "images_with_other_labels": self.label_mismatch,
                   "max_box_diff_px": self.box_diff, "max_score_diff": self.score_diff}
        if not self.matched:
            figures["not_comparable"] = (
                "neither side detected anything" if not self.detections + self.deployed_detections else
                f"no detection of one side has a counterpart on the other (the same class, IoU >= {MATCH_IOU}): "
                "box and score differences are not measured")
        return figures

    def figures(self, coco_gt: Any) -> dict:
        metrics = {}
        for name, arrays in (("eager", self.eager_arrays), ("deployed", self.deployed_arrays)):
            scores = evaluate_coco(coco_gt, np.concatenate(arrays), image_ids=self.image_ids)
            metrics[name] = {key: round(scores[key], 4) for key in ("map", "map_50", "map_75", "mar_100")}
        return {**self.comparison(), **metrics}


class SegmentationFigures:
    """Segmentation parity accumulated image by image: pixels whose label differs, the largest logit difference
    (logits exported), and both sides' mIoU and pixel accuracy."""

    def __init__(self, num_classes: int, argmax: bool) -> None:
        self.num_classes, self.argmax = num_classes, argmax
        self.eager_cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.deployed_cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.pixels = self.differing = self.images = 0
        self.logit_diff = 0.0

    def compare(self, eager_logits: Tensor, exported: Tensor) -> None:
        """The network-size outputs: eager ``(n, K, H, W)`` logits, exported logits or ``(n, H, W)`` labels."""
        labels = exported if self.argmax else exported.argmax(1)
        if not self.argmax:
            self.logit_diff = max(self.logit_diff, float((exported - eager_logits).abs().max()))
        self.differing += int((labels != eager_logits.argmax(1)).sum())
        self.pixels += labels.numel()

    def score(self, eager_labels: Tensor, deployed_labels: Tensor, target: Tensor) -> None:
        """``(n, h, w)`` labels of both sides against the ground truth ``target`` of the same size."""
        k = self.num_classes
        self.eager_cm += confusion_matrix(eager_labels, target, k, IGNORE_INDEX)
        self.deployed_cm += confusion_matrix(deployed_labels, target, k, IGNORE_INDEX)
        self.images += len(target)

    def figures(self) -> dict:
        figures = {"images": self.images, "pixels_with_other_label": self.differing, "pixels": self.pixels}
        if not self.argmax:
            figures["max_logit_diff"] = self.logit_diff
        for name, cm in (("eager", self.eager_cm), ("deployed", self.deployed_cm)):
            scores = scores_from_confusion(cm)
            figures[name] = {"miou": round(float(scores["miou"]) * 100, 4),
                             "pixel_accuracy": round(float(scores["pixel_accuracy"]) * 100, 4)}
        return figures


@torch.no_grad()
def detection_parity(task: DetectionTask, deployed: DeployedModel, datamodule: Any, max_images: int,
                     reference: nn.Module | None = None) -> dict:
    batches = _batches(datamodule, max_images)
    model = (task.model if reference is None else reference).eval()
    figures = DetectionFigures(task.labels.label_to_cat_id or datamodule.label_to_cat_id)
    for images, targets in batches:
        images = resize_to(images, deployed.fixed_size)  # the export's size, where the data gives another
        exported = deployed.detections(denormalize(images, datamodule.mean, datamodule.std))
        figures.add(model.predict(images), exported, targets, tuple(images.shape[-2:]))
    return figures.figures(datamodule.val_coco)


@torch.no_grad()
def segmentation_parity(task: SegmentationTask, deployed: DeployedModel, datamodule: Any, max_images: int,
                        argmax: bool, reference: nn.Module | None = None) -> dict:
    batches = _batches(datamodule, max_images)
    model = (task.model if reference is None else reference).eval()
    if task.evaluation.output_stride is not None and reference is None:
        model.set_output_stride(task.evaluation.output_stride)
    figures = SegmentationFigures(task.num_classes, argmax)
    for batch in batches:
        images, masks = batch[0], batch[1]
        sizes = batch[2] if len(batch) > 2 else [tuple(images.shape[-2:])] * len(images)
        for i, (h, w) in enumerate(sizes):  # each image at its own size, as validation does
            image, target = images[i:i + 1, :, :h, :w], masks[i:i + 1, :h, :w]
            if deployed.fixed_size is not None:  # a file of one input size: both sides see the image at it
                image = resize_to(image, deployed.fixed_size)
                target = F.interpolate(target[:, None].float(), size=deployed.fixed_size,
                                       mode="nearest")[:, 0].to(target.dtype)
            logits = model(image)["out"]
            exported = deployed(denormalize(image, datamodule.mean, datamodule.std))
            exported = exported["labels" if argmax else "logits"]
            figures.compare(logits, exported)
            figures.score(logits.argmax(1), exported if argmax else exported.argmax(1), target)
    return figures.figures()


@torch.no_grad()
def joint_parity(task: JointTask, deployed: DeployedModel, datamodule: Any, max_images: int, argmax: bool,
                 reference: nn.Module | None = None) -> dict:
    """Both sets of figures from one run of each side per batch: ``{"detection": ..., "segmentation": ...}``. The
    masks are scored at the original size as the joint task scores them (exported labels resized there by nearest
    neighbour)."""
    batches = _batches(datamodule, max_images)
    model = (task.model if reference is None else reference).eval()
    detection = DetectionFigures(task.labels.label_to_cat_id or datamodule.label_to_cat_id)
    segmentation = SegmentationFigures(task.num_seg_classes, argmax)
    for images, targets in batches:
        images = resize_to(images, deployed.fixed_size)  # the export's size, where the data gives another
        size = tuple(images.shape[-2:])
        outputs = model(images)
        exported = deployed(denormalize(images, datamodule.mean, datamodule.std))
        detection.add(model.postprocess(outputs, size), deployed.detections_from(exported), targets, size)
        seg = exported["seg_labels" if argmax else "seg_logits"]
        segmentation.compare(outputs["out"], seg)
        masks = [t["mask"] for t in targets]
        for members, logits in logits_by_size(outputs["out"], [m.shape for m in masks]):
            target = torch.stack([masks[i] for i in members])
            if argmax:
                labels = F.interpolate(seg[members, None].float(), size=target.shape[-2:], mode="nearest")[:, 0]
            else:
                labels = next(logits_by_size(seg[members], [target.shape[-2:]] * len(members)))[1].argmax(1)
            segmentation.score(logits.argmax(1), labels.long(), target)
    return {"images": len(detection.image_ids), "detection": detection.figures(datamodule.val_coco),
            "segmentation": segmentation.figures()}


@torch.no_grad()
def classification_parity(task: ClassificationTask, deployed: DeployedModel, datamodule: Any,
                          max_images: int, reference: nn.Module | None = None) -> dict:
    batches = _batches(datamodule, max_images)
    model = (task.model if reference is None else reference).eval()
    correct = {"eager": 0, "deployed": 0}
    total, logit_diff, other = 0, 0.0, 0
    for images, labels in batches:
        images = resize_to(images, deployed.fixed_size)  # the export's size, where the data gives another
        eager = model(images)["logits"]
        exported = deployed(denormalize(images, datamodule.mean, datamodule.std))["logits"]
        logit_diff = max(logit_diff, float((eager - exported).abs().max()))
        other += int((eager.argmax(1) != exported.argmax(1)).sum())
        correct["eager"] += int((eager.argmax(1) == labels).sum())
        correct["deployed"] += int((exported.argmax(1) == labels).sum())
        total += len(labels)
    return {"images": total, "images_with_other_class": other, "max_logit_diff": logit_diff,
            **{name: {"acc1": round(c / max(total, 1), 4)} for name, c in correct.items()}}


def parity(task: Any, deployed: DeployedModel, datamodule: Any, *, max_images: int = 200,
           argmax: bool = False, reference: nn.Module | None = None) -> dict:
    """The parity figures of ``deployed`` against ``task``'s eager model on up to ``max_images`` validation images,
    by ``task.task_name``; ``{"skipped": why}`` when the validation set cannot be read. ``reference``: the eager
    network to compare with instead of ``task.model`` (with its outputs and ``predict`` / ``postprocess``), e.g. the
    fake-quantised network a quantisation-aware trained int8 file was converted from."""
    kind = getattr(task, "task_name", "")
    if kind not in ("detection", "joint", "segmentation", "classification"):
        raise TypeError(f"parity: {type(task).__name__}.task_name is {kind!r}; parity compares 'detection', 'joint', "
                        "'segmentation' and 'classification' tasks: give the task one of these names")
    try:
        if kind == "joint":
            return joint_parity(task, deployed, datamodule, max_images, argmax, reference)
        if kind == "detection":
            return detection_parity(task, deployed, datamodule, max_images, reference)
        if kind == "segmentation":
            return segmentation_parity(task, deployed, datamodule, max_images, argmax, reference)
        return classification_parity(task, deployed, datamodule, max_images, reference)
    except (FileNotFoundError, NotADirectoryError) as error:
        return {"skipped": f"no validation set to compare on: {error}"}
