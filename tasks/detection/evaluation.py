"""COCO box evaluation (the official AP@[.5:.95] protocol) with pycocotools or faster-coco-eval.

Both backends implement the same protocol (101-point interpolated precision, area ranges, maxDets 100);
faster-coco-eval moves the per-image matching and accumulation into C++. ``tests/tasks/test_detection_eval.py``
checks that the two give identical numbers, so the faster one is the default.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_convert

from ...datasets.detection.coco import coco_dataset

Backend = Literal["faster_coco_eval", "pycocotools"]

# Order of COCOeval.stats[:6] (both backends): AP@[.5:.95], AP50, AP75, AP small, medium, large.
METRIC_NAMES = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")
RECALL_NAMES = ("mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


def _coco_objects(coco_gt: Any, backend: Backend) -> tuple[Any, type]:
    """Ground truth as the backend's own COCO class, and the backend's COCOeval class."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if isinstance(coco_gt, COCO):
            return coco_gt, COCOeval
        gt = COCO()
        gt.dataset = coco_dataset(coco_gt)
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
            gt.createIndex()
        return gt, COCOeval
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        if isinstance(coco_gt, COCO):
            return coco_gt, COCOeval_faster
        return COCO(coco_dataset(coco_gt)), COCOeval_faster
    raise ValueError(f"evaluation.py: backend must be 'faster_coco_eval' or 'pycocotools', got {backend!r}")


def evaluate_coco(coco_gt: Any, results: list[dict] | np.ndarray, *, backend: Backend = "faster_coco_eval",
                  image_ids: list[int] | None = None, verbose: bool = False,
                  return_eval: bool = False) -> dict[str, float] | tuple[dict[str, float], Any]:
    """COCO bbox metrics of ``results`` against ``coco_gt``.

    Args:
        coco_gt: ground truth: a ``pycocotools`` / ``faster_coco_eval`` COCO object, a COCO dict or a JSON path.
        results: COCO detection results, ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in
            original image pixels, or the ``(D, 7)`` array of :func:`detections_to_array`. Not modified.
        backend: ``"faster_coco_eval"`` (C++ matching, same numbers) or ``"pycocotools"`` (the reference).
        image_ids: evaluate on these images only (e.g. the part of val a ``limit_val_batches`` run saw);
            ``None`` = every image of ``coco_gt``.
        verbose: print COCO's 12-line summary table (``DetectionTask`` does under ``validate`` and ``test``, not
            at the validations inside ``fit``, whose log gets the numbers as metrics).
        return_eval: also return the accumulated COCOeval object (either library's), e.g. for its
            ``eval["precision"]`` ``(T, R, K, A, M)`` precision-recall array (``params.iouThrs``, ``params.catIds``
            name its axes); ``None`` when there were no detections.

    Returns:
        ``map, map_50, map_75, map_small, map_medium, map_large, mar_1, mar_10, mar_100, mar_small,
        mar_medium, mar_large`` as floats. COCO's ``-1`` (no ground truth in that area range) is kept;
        an empty ``results`` gives all zeros without running COCOeval (both libraries reject empty results).
        With ``return_eval``: ``(metrics, evaluator)``.
    """
    names = METRIC_NAMES + RECALL_NAMES
    if isinstance(results, np.ndarray):
        results = array_to_results(results, decimals=6)
    if not results:
        if verbose:
            print("COCO evaluation: no detections, every metric is 0")
        return (dict.fromkeys(names, 0.0), None) if return_eval else dict.fromkeys(names, 0.0)
    gt, evaluator_cls = _coco_objects(coco_gt, backend)
    # loadRes adds "area", "id", "segmentation" to each dict in place: work on copies.
    results = copy.deepcopy(results)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        dt = gt.loadRes(results)
        if backend == "faster_coco_eval":
            evaluator = evaluator_cls(gt, dt, iouType="bbox", print_function=print if verbose else _silent)
        else:
            evaluator = evaluator_cls(gt, dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(set(int(i) for i in image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=np.float64)[: len(names)]
    metrics = {name: float(value) for name, value in zip(names, stats)}
    return (metrics, evaluator) if return_eval else metrics


def _silent(*args: Any, **kwargs: Any) -> None:
    return None


def detections_to_array(detections: list[dict[str, Tensor]], image_ids: list[int],
                        label_to_cat_id: dict[int, int] | None) -> np.ndarray:
    """Per-image detections (boxes already xyxy in original pixels) as COCO's ``(D, 7)`` results array.

    Columns ``image_id, x, y, w, h, score, category_id`` (the layout both COCO libraries' ``loadRes`` read);
    a plain array is cheap to gather across ranks, unlike a list of dicts.

    Args:
        detections: one dict per image with ``boxes (D, 4)`` xyxy, ``scores (D,)``, ``labels (D,)`` in 1..K.
        image_ids: the COCO image id of each image.
        label_to_cat_id: contiguous label -> COCO category id (COCO's ids have gaps); ``None`` = identity.
    """
    if not detections:
        return np.zeros((0, 7))
    counts = [len(d["scores"]) for d in detections]
    boxes = torch.cat([d["boxes"] for d in detections]).detach().double().cpu()  # (D, 4) xyxy
    xywh = box_convert(boxes, in_fmt="xyxy", out_fmt="xywh").numpy()  # (D, 4) COCO's [x, y, w, h]
    scores = torch.cat([d["scores"] for d in detections]).detach().double().cpu().numpy()  # (D,)
    labels = torch.cat([d["labels"] for d in detections]).detach().cpu().numpy()  # (D,)
    if label_to_cat_id is not None and len(labels):
        lookup = np.full(max(max(label_to_cat_id), int(labels.max())) + 1, -1, dtype=np.int64)
        lookup[list(label_to_cat_id)] = list(label_to_cat_id.values())
        categories = lookup[labels]
        if (categories < 0).any():
            missing = sorted(set(labels[categories < 0].tolist()))
            raise KeyError(f"evaluation.py: labels {missing} have no COCO category id in label_to_cat_id "
                           f"(known labels {sorted(label_to_cat_id)}); check num_classes against the dataset")
    else:
        categories = labels
    ids = np.repeat(np.asarray(image_ids, dtype=np.float64), counts)  # (D,)
    return np.column_stack([ids, xywh, scores, categories.astype(np.float64)])  # (D, 7)


def array_to_results(array: np.ndarray, decimals: int = 2) -> list[dict]:
    """COCO results dicts from a ``(D, 7)`` array; boxes rounded to ``decimals`` of a pixel (smaller JSON)."""
    boxes = np.round(array[:, 1:5], decimals).tolist()
    scores = np.round(array[:, 5], 5).tolist()
    ids = array[:, 0].astype(np.int64).tolist()
    categories = array[:, 6].astype(np.int64).tolist()
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(ids, categories, boxes, scores)]


def detections_to_coco(detections: list[dict[str, Tensor]], image_ids: list[int],
                       label_to_cat_id: dict[int, int] | None) -> list[dict]:
    """COCO results dicts (``image_id, category_id, bbox [x, y, w, h], score``); see :func:`detections_to_array`."""
    return array_to_results(detections_to_array(detections, image_ids, label_to_cat_id))


def scale_to_original(detections: list[dict[str, Tensor]], input_size: tuple[int, int],
                      orig_sizes: list[Tensor] | Tensor) -> list[dict[str, Tensor]]:
    """Map boxes from network-input pixels back to original image pixels.

    Evaluation resizes without letterboxing (the data contract), so x scales by ``orig_w / W`` and
    y by ``orig_h / H``. ``input_size`` is ``(H, W)``; ``orig_sizes`` holds ``(height, width)`` per image.
    """
    height, width = input_size
    out = []
    for det, orig in zip(detections, orig_sizes):
        orig_h, orig_w = (float(v) for v in orig)
        scale = det["boxes"].new_tensor([orig_w / width, orig_h / height, orig_w / width, orig_h / height])
        out.append({**det, "boxes": det["boxes"] * scale})  # (D, 4) * (4,)
    return out


def split_predict_batch(batch: Any) -> tuple[Tensor, list[dict[str, Any]]]:
    """``(images, per-image dicts with path, image_id, orig_size)`` from a predict batch.

    Accepts the detection contract's ``(images, targets)`` (targets carrying ``path``) and the image-folder
    form ``{"images", "paths", "sizes"}``.
    """
    if isinstance(batch, dict):
        images = batch["images"]
        sizes = batch.get("orig_sizes", batch.get("sizes"))
        ids = batch.get("image_ids", [-1] * len(images))
        metas = [{"path": str(p), "image_id": int(i), "orig_size": torch.as_tensor(s)}
                 for p, i, s in zip(batch["paths"], ids, sizes)]
        return images, metas
    images, targets = batch
    metas = [{"path": str(t.get("path", t.get("file_name", ""))), "image_id": int(t.get("image_id", -1)),
              "orig_size": torch.as_tensor(t["orig_size"])} for t in targets]
    return images, metas
