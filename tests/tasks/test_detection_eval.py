"""COCO evaluation: both backends agree with each other and with hand-made cases; result mapping is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mobilenetv2_dense.tasks.detection.evaluation import (
    METRIC_NAMES,
    RECALL_NAMES,
    detections_to_coco,
    evaluate_coco,
    scale_to_original,
)

BACKENDS = ("pycocotools", "faster_coco_eval")


def make_gt(num_images: int = 12, seed: int = 0) -> dict:
    """A COCO dict with gapped category ids, small/medium/large boxes, a crowd region and an empty image."""
    rng = np.random.default_rng(seed)
    categories = [{"id": cid, "name": f"c{cid}"} for cid in (1, 3, 7)]
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 480, "width": 640})
        if image_id == num_images:
            continue  # an image without objects, as COCO has
        for _ in range(int(rng.integers(1, 6))):
            side = float(rng.choice([20.0, 60.0, 150.0]))  # area < 32^2, in (32^2, 96^2), > 96^2
            w, h = side * rng.uniform(0.7, 1.3), side * rng.uniform(0.7, 1.3)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(rng.choice([1, 3, 7])), "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
    annotations[0]["iscrowd"] = 1
    return {"images": images, "annotations": annotations, "categories": categories}


def gt_as_results(gt: dict) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
            for a in gt["annotations"] if not a["iscrowd"]]


def noisy_results(gt: dict, seed: int = 1) -> list[dict]:
    """Jittered ground truth with random scores, some class swaps and false positives."""
    rng = np.random.default_rng(seed)
    results = []
    for res in gt_as_results(gt):
        x, y, w, h = res["bbox"]
        jitter = rng.normal(0, 0.12, size=4) * [w, h, w, h]
        category = res["category_id"] if rng.random() > 0.15 else 3
        results.append({**res, "category_id": category, "score": float(rng.uniform(0.05, 1.0)),
                        "bbox": [x + jitter[0], y + jitter[1], abs(w + jitter[2]), abs(h + jitter[3])]})
    for image in gt["images"]:
        results.append({"image_id": image["id"], "category_id": 7, "score": float(rng.uniform(0, 0.6)),
                        "bbox": [float(v) for v in rng.uniform(0, 300, size=4)]})
    return results


@pytest.mark.parametrize("backend", BACKENDS)
def test_ground_truth_as_predictions_scores_one(backend: str) -> None:
    gt = make_gt()
    metrics = evaluate_coco(gt, gt_as_results(gt), backend=backend, verbose=False)
    for name in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"):
        assert metrics[name] == pytest.approx(1.0), name


def test_backends_identical_and_equal_to_reference() -> None:
    """faster-coco-eval (the default) reproduces pycocotools' COCOeval exactly on imperfect predictions."""
    gt = make_gt(num_images=20)
    results = noisy_results(gt)
    fast = evaluate_coco(gt, results, backend="faster_coco_eval", verbose=False)
    slow = evaluate_coco(gt, results, backend="pycocotools", verbose=False)
    assert 0.2 < fast["map"] < 0.95  # a case where the protocol's details matter
    assert fast == pytest.approx(slow, abs=1e-12)

    # The reference, called directly as its README shows.
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    reference = COCOeval(coco, coco.loadRes([dict(r) for r in results]), iouType="bbox")
    reference.evaluate()
    reference.accumulate()
    reference.summarize()
    assert [slow[n] for n in METRIC_NAMES + RECALL_NAMES] == pytest.approx(list(reference.stats), abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_predictions_give_zero(backend: str) -> None:
    metrics = evaluate_coco(make_gt(), [], backend=backend, verbose=False)
    assert set(metrics) == set(METRIC_NAMES + RECALL_NAMES)
    assert all(value == 0.0 for value in metrics.values())


def test_accepts_coco_objects_and_leaves_results_untouched() -> None:
    gt = make_gt()
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    results = noisy_results(gt)
    before = [dict(r) for r in results]
    from_object = evaluate_coco(coco, results, backend="faster_coco_eval", verbose=False)
    assert from_object == evaluate_coco(gt, results, backend="faster_coco_eval", verbose=False)
    assert results == before


def test_unknown_backend_is_named() -> None:
    with pytest.raises(ValueError, match="'detectron'"):
        evaluate_coco(make_gt(), gt_as_results(make_gt()), backend="detectron", verbose=False)  # type: ignore[arg-type]


def test_scale_to_original_and_coco_mapping() -> None:
    """A box in 320x320 network pixels maps to a 640x480 (w x h) image and a gapped category id."""
    detections = [
        {"boxes": torch.tensor([[32.0, 40.0, 160.0, 320.0]]), "scores": torch.tensor([0.9]),
         "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
        {"boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 6.0, 7.0]]), "scores": torch.tensor([0.5, 0.25]),
         "labels": torch.tensor([1, 3])},
    ]
    orig = torch.tensor([[480, 640], [100, 100], [320, 160]])  # (height, width)
    scaled = scale_to_original(detections, (320, 320), orig)
    # x * 640 / 320 = 2x, y * 480 / 320 = 1.5y
    torch.testing.assert_close(scaled[0]["boxes"], torch.tensor([[64.0, 60.0, 320.0, 480.0]]))
    torch.testing.assert_close(scaled[2]["boxes"], torch.tensor([[0.0, 0.0, 5.0, 20.0], [2.5, 5.0, 3.0, 7.0]]))
    results = detections_to_coco(scaled, [42, 7, 9], {1: 1, 2: 3, 3: 7})
    assert results == [
        {"image_id": 42, "category_id": 3, "bbox": [64.0, 60.0, 256.0, 420.0], "score": 0.9},
        {"image_id": 9, "category_id": 1, "bbox": [0.0, 0.0, 5.0, 20.0], "score": 0.5},
        {"image_id": 9, "category_id": 7, "bbox": [2.5, 5.0, 0.5, 2.0], "score": 0.25},
    ]
    with pytest.raises(KeyError, match=r"labels \[3\]"):
        detections_to_coco(scaled, [42, 7, 9], {1: 1, 2: 3})


def test_array_results_and_image_subset() -> None:
    """The (D, 7) array form scores like the dicts; image_ids restricts COCOeval to the images a run saw."""
    gt = make_gt(num_images=10)
    results = noisy_results(gt)
    array = np.array([[r["image_id"], *r["bbox"], r["score"], r["category_id"]] for r in results])
    from_dicts = evaluate_coco(gt, results, verbose=False)
    assert evaluate_coco(gt, array, verbose=False) == pytest.approx(from_dicts, abs=1e-9)

    seen = [1, 2, 3]  # perfect predictions for these images only
    perfect = [r for r in gt_as_results(gt) if r["image_id"] in seen]
    assert evaluate_coco(gt, perfect, image_ids=seen, verbose=False)["map"] == pytest.approx(1.0)
    assert evaluate_coco(gt, perfect, verbose=False)["map"] < 0.6  # the unseen images count as misses
