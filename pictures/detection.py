"""Detection pictures: boxes drawn on an image, and what ``validate`` / ``test`` write: the (K + 1) x (K + 1)
confusion matrix with a background class, as PNG and CSV, and precision-recall curves from COCOeval.

The confusion matrix follows the matching of COCO and YOLO, class-agnostic so that a box of the wrong class shows
off the diagonal: detections scoring at least ``score_thresh`` are taken in order of score, each matched to the
still unmatched ground-truth box it overlaps most, if that IoU is at least ``iou_thresh``. Rows are the true
class, columns the predicted one, index K is background: a matched pair counts at (true class, predicted class),
a detection left unmatched at (background, predicted class), a ground-truth box left unmatched at (true class,
background). Crowd regions (COCO ``iscrowd``; VOC ``difficult`` is stored that way) are not boxes to find: like
COCOeval, an unmatched detection lying on one (intersection over the detection's area >= ``iou_thresh``) is not
counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.ops import box_convert, box_iou
from torchvision.utils import draw_bounding_boxes

from ..datasets.detection.coco import coco_dataset
from .charts import plot_confusion_matrix, plot_pr_curves

# Distinct, saturated colours; class k uses _PALETTE[(k - 1) % len].
_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
            "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075")


def draw_detections(image: np.ndarray | Tensor, boxes: Tensor, labels: Tensor, scores: Tensor | None = None, *,
                    class_names: list[str] | None = None, score_thresh: float = 0.3, width: int = 2) -> Tensor:
    """Draw boxes with ``"name score"`` captions on an image.

    Args:
        image: ``(H, W, 3)`` uint8 array (as :func:`mobilenetv2_dense.datasets.images.read_rgb` gives) or
            ``(3, H, W)`` uint8 tensor.
        boxes: ``(D, 4)`` xyxy in the pixels of ``image``.
        labels: ``(D,)`` in 1..K; ``class_names[k - 1]`` names label k.
        scores: ``(D,)`` or ``None`` (ground truth: every box drawn, no score).
        score_thresh: boxes scoring below it are not drawn (the evaluator keeps them; a picture cannot).

    Returns:
        ``(3, H, W)`` uint8 tensor.
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W); a writable copy
    boxes, labels = boxes.detach().cpu().float(), labels.detach().cpu()
    if scores is not None:
        keep = scores.detach().cpu() >= score_thresh
        boxes, labels, scores = boxes[keep], labels[keep], scores.detach().cpu()[keep]
    if len(boxes) == 0:
        return image.clone()
    names = [class_names[k - 1] if class_names and 0 < k <= len(class_names) else str(k) for k in labels.tolist()]
    captions = names if scores is None else [f"{n} {s:.2f}" for n, s in zip(names, scores.tolist())]
    colours = [_PALETTE[(k - 1) % len(_PALETTE)] for k in labels.tolist()]
    return draw_bounding_boxes(image, boxes, labels=captions, colors=colours, width=width)


def save_image(image: Tensor, path: str | Path, quality: int = 90) -> Path:
    """Save a ``(3, H, W)`` uint8 tensor; the suffix picks the format (``.jpg`` / ``.png``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.permute(1, 2, 0).cpu().numpy()  # (3, H, W) -> (H, W, 3)
    options = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array).save(path, **options)
    return path


CONFUSION_SCORE_THRESH = 0.25  # the detections a user would show (YOLO's default), not COCO's 0.01 for AP
CONFUSION_IOU_THRESH = 0.5


def match_greedy(det_boxes: Tensor, gt_boxes: Tensor, iou_thresh: float = CONFUSION_IOU_THRESH) -> Tensor:
    """``(D,)`` index of the ground-truth box each detection matches, or -1; detections in order of score.

    Args:
        det_boxes: ``(D, 4)`` xyxy, sorted by score, highest first.
        gt_boxes: ``(G, 4)`` xyxy.

    Greedy by score, as COCOeval: detection d takes the free box of highest IoU >= ``iou_thresh`` (ties: the
    lowest index). Computed in rounds over all detections at once rather than one detection at a time: in a round,
    a detection whose best free box is a candidate (IoU >= threshold) of no higher-scoring undecided detection
    gets it now, because nobody before it can take it and its other candidates only shrink; the highest-scoring
    undecided detection always decides, and most images need two or three rounds.
    """
    num_det, num_gt = det_boxes.shape[0], gt_boxes.shape[0]
    match = torch.full((num_det,), -1, dtype=torch.long)
    if num_det == 0 or num_gt == 0:
        return match
    iou = box_iou(det_boxes.double(), gt_boxes.double())  # (D, G)
    candidate = iou >= iou_thresh  # (D, G)
    undecided = candidate.any(1)  # (D,) detections without any candidate stay unmatched
    free = torch.ones(num_gt, dtype=torch.bool)
    while undecided.any():
        open_ = candidate & free[None] & undecided[:, None]  # (D, G) candidates still in play
        best_iou, best = torch.where(open_, iou, -1.0).max(1)  # first index of the maximum: the lowest
        has = best_iou >= 0
        taken_before = (open_.long().cumsum(0) - open_.long()).gather(1, best[:, None])[:, 0]  # (D,)
        decides = has & (taken_before == 0)
        match[decides] = best[decides]
        free[best[decides]] = False
        undecided &= has & ~decides
    return match


def _intersection_over_first(first: Tensor, second: Tensor) -> Tensor:
    """``(P, Q)`` area of each intersection over the area of the box of ``first`` (COCO's crowd overlap)."""
    top_left = torch.maximum(first[:, None, :2], second[None, :, :2])  # (P, Q, 2)
    bottom_right = torch.minimum(first[:, None, 2:], second[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)  # (P, Q)
    area = (first[:, 2:] - first[:, :2]).clamp(min=0).prod(-1)  # (P,)
    return inter / area.clamp(min=1e-12)[:, None]


def image_confusion(det_boxes: Tensor, det_scores: Tensor, det_labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                    num_classes: int, *, gt_crowd: Tensor | None = None, score_thresh: float = CONFUSION_SCORE_THRESH,
                    iou_thresh: float = CONFUSION_IOU_THRESH) -> Tensor:
    """One image's ``(K + 1, K + 1)`` int64 confusion counts (see the module docstring).

    Args:
        det_boxes, det_scores, det_labels: ``(D, 4)`` xyxy, ``(D,)``, ``(D,)`` class indices in 0..K-1.
        gt_boxes, gt_labels: ``(G, 4)`` xyxy, ``(G,)`` class indices in 0..K-1.
        gt_crowd: ``(G,)`` bool, crowd regions (not counted; they absorb the unmatched detections lying on them).
    """
    background = num_classes
    crowd = torch.zeros(len(gt_labels), dtype=torch.bool) if gt_crowd is None else gt_crowd.bool()
    keep = det_scores >= score_thresh
    order = torch.sort(det_scores[keep], descending=True, stable=True).indices  # COCO's stable sort by score
    det_boxes, det_labels = det_boxes[keep][order], det_labels[keep][order].long()
    boxes, labels = gt_boxes[~crowd], gt_labels[~crowd].long()
    match = match_greedy(det_boxes, boxes, iou_thresh)  # (D,)
    matched = match >= 0
    unmatched = ~matched
    if crowd.any() and unmatched.any():
        on_crowd = (_intersection_over_first(det_boxes.double(), gt_boxes[crowd].double()) >= iou_thresh).any(1)
        unmatched &= ~on_crowd
    missed = torch.ones(len(labels), dtype=torch.bool)
    missed[match[matched]] = False
    true = torch.cat([labels[match[matched]], torch.full((int(unmatched.sum()),), background), labels[missed]])
    predicted = torch.cat([det_labels[matched], det_labels[unmatched], torch.full((int(missed.sum()),), background)])
    size = num_classes + 1
    return torch.bincount(true * size + predicted, minlength=size * size).reshape(size, size)


def detection_confusion_matrix(coco_gt: Any, results: np.ndarray, category_ids: Sequence[int], *,
                               image_ids: Sequence[int] | None = None, score_thresh: float = CONFUSION_SCORE_THRESH,
                               iou_thresh: float = CONFUSION_IOU_THRESH) -> np.ndarray:
    """``(K + 1, K + 1)`` int64 confusion matrix of COCO results against COCO ground truth, over ``image_ids``.

    Args:
        coco_gt: ground truth (a COCO object of either library, a COCO dict or a JSON path).
        results: the ``(D, 7)`` array of :func:`mobilenetv2_dense.tasks.detection.evaluation.detections_to_array`
            (``image_id, x, y, w, h, score, category_id``, original pixels).
        category_ids: the COCO category id of class index 0..K-1 (row / column k); others are left out.
        image_ids: the images evaluated (``None``: every image of ``coco_gt``).
    """
    dataset = coco_dataset(coco_gt)
    index_of = np.full(max([*category_ids, 0]) + 1, -1, dtype=np.int64)
    index_of[list(category_ids)] = np.arange(len(category_ids))
    ids = [image["id"] for image in dataset["images"]] if image_ids is None else list(image_ids)
    wanted = set(int(i) for i in ids)
    annotations = [a for a in dataset["annotations"] if a["image_id"] in wanted and a["category_id"] < len(index_of)
                   and index_of[a["category_id"]] >= 0]
    gt = {
        "image": torch.tensor([a["image_id"] for a in annotations], dtype=torch.long),
        "boxes": box_convert(torch.tensor([a["bbox"] for a in annotations], dtype=torch.float64).reshape(-1, 4),
                             "xywh", "xyxy"),
        "labels": torch.as_tensor(index_of[[a["category_id"] for a in annotations]], dtype=torch.long),
        "crowd": torch.tensor([bool(a.get("iscrowd", 0)) for a in annotations], dtype=torch.bool),
    }
    results = np.asarray(results, dtype=np.float64).reshape(-1, 7)
    category = results[:, 6].astype(np.int64)
    known = (category < len(index_of)) & np.isin(results[:, 0].astype(np.int64), list(wanted))
    known[known] = index_of[category[known]] >= 0
    det = {"image": torch.as_tensor(results[known, 0].astype(np.int64)),
           "boxes": box_convert(torch.as_tensor(results[known, 1:5]), "xywh", "xyxy"),
           "scores": torch.as_tensor(results[known, 5]),
           "labels": torch.as_tensor(index_of[category[known]])}
    # Group both sides by image once (sort + split) instead of scanning every box per image.
    gt_groups, det_groups = _split_by_image(gt), _split_by_image(det)
    total = torch.zeros(len(category_ids) + 1, len(category_ids) + 1, dtype=torch.long)
    empty_gt = {key: value[:0] for key, value in gt.items()}
    empty_det = {key: value[:0] for key, value in det.items()}
    for image_id in sorted(wanted):
        g, d = gt_groups.get(image_id, empty_gt), det_groups.get(image_id, empty_det)
        if len(g["labels"]) or len(d["labels"]):
            total += image_confusion(d["boxes"], d["scores"], d["labels"], g["boxes"], g["labels"],
                                     len(category_ids), gt_crowd=g["crowd"], score_thresh=score_thresh,
                                     iou_thresh=iou_thresh)
    return total.numpy()


def _split_by_image(columns: dict[str, Tensor]) -> dict[int, dict[str, Tensor]]:
    """``{image_id: {column: rows of that image}}`` from columns sharing an ``image`` column."""
    image = columns["image"]
    if not len(image):
        return {}
    order = torch.sort(image, stable=True).indices
    ids, counts = torch.unique_consecutive(image[order], return_counts=True)
    parts = {key: torch.split(value[order], counts.tolist()) for key, value in columns.items()}
    return {int(i): {key: parts[key][n] for key in columns} for n, i in enumerate(ids.tolist())}


def category_names(category_ids: Sequence[int], class_names: Sequence[str] | None,
                   label_to_cat_id: dict[int, int] | None) -> list[str]:
    """A name per COCO category id: ``class_names[label - 1]`` of the label mapped to it, else ``"category <id>"``."""
    label_of = {cat: label for label, cat in (label_to_cat_id or {}).items()}
    names = []
    for cat in category_ids:
        label = label_of.get(int(cat), int(cat) if label_to_cat_id is None else None)
        named = class_names is not None and label is not None and 1 <= label <= len(class_names)
        names.append(str(class_names[label - 1]) if named else f"category {cat}")
    return names


def write_detection_pictures(folder: str | Path, evaluator: Any, coco_gt: Any, results: np.ndarray,
                             image_ids: Sequence[int], class_names: Sequence[str] | None,
                             label_to_cat_id: dict[int, int] | None, *,
                             score_thresh: float = CONFUSION_SCORE_THRESH) -> list[Path]:
    """``pr_curves.png`` (from ``evaluator.eval["precision"]``; none without detections), ``confusion_matrix.png``
    and ``confusion_matrix.csv`` (counts, with a header of class names) in ``folder``; returns their paths.

    ``evaluator`` is an accumulated COCOeval (``evaluate_coco(..., return_eval=True)`` of the detection evaluation),
    or ``None``.
    """
    folder = Path(folder)
    if label_to_cat_id:
        category_ids = [label_to_cat_id[label] for label in sorted(label_to_cat_id)]  # label order: 1..K
    else:
        category_ids = sorted(int(c["id"]) for c in coco_dataset(coco_gt)["categories"])
    names = category_names(category_ids, class_names, label_to_cat_id)
    written = []
    if evaluator is not None:
        evaluated = [int(c) for c in evaluator.params.catIds]
        written.append(plot_pr_curves(evaluator.eval["precision"], category_names(evaluated, class_names,
                                                                                  label_to_cat_id),
                                      folder / "pr_curves.png", iou_thresholds=evaluator.params.iouThrs))
    matrix = detection_confusion_matrix(coco_gt, results, category_ids, image_ids=image_ids,
                                        score_thresh=score_thresh)
    labels = [*names, "background"]
    written.append(plot_confusion_matrix(
        matrix, labels, folder / "confusion_matrix.png",
        title=f"confusion matrix (score >= {score_thresh:g}, IoU >= {CONFUSION_IOU_THRESH:g}; rows: true)"))
    csv = folder / "confusion_matrix.csv"
    header = ",".join(["true \\ predicted", *(name.replace(",", " ") for name in labels)])
    rows = [",".join([name.replace(",", " "), *map(str, row)]) for name, row in zip(labels, matrix.tolist())]
    csv.write_text("\n".join([header, *rows]) + "\n")
    written.append(csv)
    return written
