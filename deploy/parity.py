"""An exported file against the eager model on the data module's validation set: outputs and metrics.

Detection: per image, the same number of detections and the same labels, and the largest box and score
differences between each detection and its counterpart; COCO mAP of both through the project's COCOeval.
Segmentation: the share of pixels whose label differs, and mIoU of both. Classification: top-1 of both and the
largest logit difference. The export command writes these figures into the sidecar JSON; the tests hold them to
the contract's tolerances.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mobilenetv2_dense.deploy.graph import denormalize
from mobilenetv2_dense.deploy.runtime import DeployedModel
from mobilenetv2_dense.tasks.classification import ClassificationTask
from mobilenetv2_dense.tasks.detection import DetectionTask
from mobilenetv2_dense.tasks.detection.evaluation import detections_to_array, evaluate_coco, scale_to_original
from mobilenetv2_dense.tasks.segmentation import SegmentationTask
from mobilenetv2_dense.tasks.segmentation.metrics import IGNORE_INDEX, confusion_matrix, scores_from_confusion


def unnormalize(images: Tensor, datamodule: Any) -> Tensor:
    """A data module's normalised batch back to the ``[0, 1]`` RGB the exported graph takes."""
    return denormalize(images, datamodule.mean, datamodule.std)


def _batches(datamodule: Any, max_images: int) -> list:
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    size = loader.batch_size or 1
    return list(islice(loader, -(-max_images // size)))  # whole batches covering max_images


def _nearest_differences(eager: dict[str, Tensor], deployed: dict[str, Tensor]) -> tuple[float, float]:
    """Largest box (pixels) and score difference between each eager detection and the deployed detection of its
    class nearest to it. Matching by position would compare two different boxes wherever two scores tie to within
    the runtimes' rounding and swap places; matching by nearest box does not."""
    same_class = eager["labels"][:, None] == deployed["labels"][None, :]  # (D, D)
    distance = (eager["boxes"][:, None] - deployed["boxes"][None]).abs().amax(-1)  # (D, D) largest coordinate gap
    distance = torch.where(same_class, distance, torch.inf)
    nearest = distance.argmin(1)
    scores = (eager["scores"] - deployed["scores"][nearest]).abs()
    return float(distance.min(1).values.max()), float(scores.max())


@torch.no_grad()
def detection_parity(task: DetectionTask, deployed: DeployedModel, datamodule: Any, max_images: int) -> dict:
    batches = _batches(datamodule, max_images)
    model = task.model.eval()
    eager_arrays, deployed_arrays, image_ids = [], [], []
    count_mismatch = label_mismatch = detections = 0
    box_diff = score_diff = 0.0
    for images, targets in batches:
        eager = model.predict(images)
        exported = deployed.detections(unnormalize(images, datamodule))
        for e, d in zip(eager, exported):
            detections += len(e["scores"])
            if len(e["scores"]) != len(d["scores"]):
                count_mismatch += 1
            elif not torch.equal(e["labels"].sort().values, d["labels"].sort().values):
                label_mismatch += 1
            elif len(e["scores"]):
                boxes, scores = _nearest_differences(e, d)
                box_diff, score_diff = max(box_diff, boxes), max(score_diff, scores)
        ids = [int(t["image_id"]) for t in targets]
        sizes = [t["orig_size"] for t in targets]
        input_size = tuple(images.shape[-2:])
        eager_arrays.append(detections_to_array(scale_to_original(eager, input_size, sizes), ids,
                                                task.label_to_cat_id or datamodule.label_to_cat_id))
        deployed_arrays.append(detections_to_array(scale_to_original(exported, input_size, sizes), ids,
                                                   task.label_to_cat_id or datamodule.label_to_cat_id))
        image_ids += ids
    metrics = {}
    for name, arrays in (("eager", eager_arrays), ("deployed", deployed_arrays)):
        scores = evaluate_coco(datamodule.val_coco, np.concatenate(arrays), image_ids=image_ids)
        metrics[name] = {key: round(scores[key], 4) for key in ("map", "map_50", "map_75", "mar_100")}
    return {"images": len(image_ids), "detections": detections, "images_with_other_count": count_mismatch,
            "images_with_other_labels": label_mismatch, "max_box_diff_px": box_diff, "max_score_diff": score_diff,
            **metrics}


@torch.no_grad()
def segmentation_parity(task: SegmentationTask, deployed: DeployedModel, datamodule: Any, max_images: int,
                        argmax: bool) -> dict:
    batches = _batches(datamodule, max_images)
    model = task.model.eval()
    if task.eval_output_stride is not None:
        model.set_output_stride(task.eval_output_stride)
    k = task.num_classes
    eager_cm, deployed_cm = torch.zeros(k, k, dtype=torch.int64), torch.zeros(k, k, dtype=torch.int64)
    pixels = differing = images_seen = 0
    logit_diff = 0.0
    for batch in batches:
        images, masks = batch[0], batch[1]
        sizes = batch[2] if len(batch) > 2 else [tuple(images.shape[-2:])] * len(images)
        for i, (h, w) in enumerate(sizes):  # each image at its own size, as validation does
            image, target = images[i:i + 1, :, :h, :w], masks[i:i + 1, :h, :w]
            logits = model(image)["out"]
            out = deployed(unnormalize(image, datamodule))
            labels = out["labels"] if argmax else out["logits"].argmax(1)
            if not argmax:
                logit_diff = max(logit_diff, float((out["logits"] - logits).abs().max()))
            eager_labels = logits.argmax(1)
            differing += int((labels != eager_labels).sum())
            pixels += eager_labels.numel()
            eager_cm += confusion_matrix(eager_labels, target, k, IGNORE_INDEX)
            deployed_cm += confusion_matrix(labels, target, k, IGNORE_INDEX)
            images_seen += 1
    figures = {"images": images_seen, "pixels_with_other_label": differing, "pixels": pixels}
    if not argmax:
        figures["max_logit_diff"] = logit_diff
    for name, cm in (("eager", eager_cm), ("deployed", deployed_cm)):
        scores = scores_from_confusion(cm)
        figures[name] = {"miou": round(float(scores["miou"]) * 100, 4),
                         "pixel_accuracy": round(float(scores["pixel_accuracy"]) * 100, 4)}
    return figures


@torch.no_grad()
def classification_parity(task: ClassificationTask, deployed: DeployedModel, datamodule: Any,
                          max_images: int) -> dict:
    batches = _batches(datamodule, max_images)
    model = task.model.eval()
    correct = {"eager": 0, "deployed": 0}
    total, logit_diff, other = 0, 0.0, 0
    for images, labels in batches:
        eager = model(images)["logits"]
        exported = deployed(unnormalize(images, datamodule))["logits"]
        logit_diff = max(logit_diff, float((eager - exported).abs().max()))
        other += int((eager.argmax(1) != exported.argmax(1)).sum())
        correct["eager"] += int((eager.argmax(1) == labels).sum())
        correct["deployed"] += int((exported.argmax(1) == labels).sum())
        total += len(labels)
    return {"images": total, "images_with_other_class": other, "max_logit_diff": logit_diff,
            **{name: {"acc1": round(c / max(total, 1), 4)} for name, c in correct.items()}}


def parity(task: Any, deployed: DeployedModel, datamodule: Any, *, max_images: int = 200,
           argmax: bool = False) -> dict:
    """The parity figures of ``deployed`` against ``task``'s eager model on up to ``max_images`` validation images;
    ``{"skipped": why}`` when the validation set cannot be read."""
    try:
        if isinstance(task, DetectionTask):
            return detection_parity(task, deployed, datamodule, max_images)
        if isinstance(task, SegmentationTask):
            return segmentation_parity(task, deployed, datamodule, max_images, argmax)
        return classification_parity(task, deployed, datamodule, max_images)
    except (FileNotFoundError, NotADirectoryError) as error:
        return {"skipped": f"no validation set to compare on: {error}"}
