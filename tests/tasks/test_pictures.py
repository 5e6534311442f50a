"""The numbers behind the pictures: the detection confusion matrix against a per-box reference and hand-made
cases, PR curves against COCOeval's precision array, the training-curve panels, the CSV and TensorBoard readers;
and every ``plot_*`` writes a PNG that PIL opens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenetv2_dense.pictures.charts import (
    Series,
    normalize_rows,
    plot_confusion_matrix,
    plot_iou_bars,
    plot_pr_curves,
    plot_training_curves,
    pr_curves,
    training_panels,
)
from mobilenetv2_dense.pictures.curves import find_log, read_metrics
from mobilenetv2_dense.pictures.detection import (
    category_names,
    detection_confusion_matrix,
    image_confusion,
    match_greedy,
    write_detection_pictures,
)
from mobilenetv2_dense.tasks.detection.evaluation import evaluate_coco

pytestmark = pytest.mark.usefixtures("one_thread")

CATEGORY_IDS = [3, 8, 20]  # gapped COCO ids of class indices 0, 1, 2
BACKGROUND = len(CATEGORY_IDS)


# ----------------------------------------------------------------------------- a per-box reference (plain Python)
def _iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _ioa(det: list[float], region: list[float]) -> float:
    inter = max(0.0, min(det[2], region[2]) - max(det[0], region[0])) * \
        max(0.0, min(det[3], region[3]) - max(det[1], region[1]))
    return inter / max((det[2] - det[0]) * (det[3] - det[1]), 1e-12)


def reference_matches(dets: list[list[float]], gts: list[list[float]], thresh: float) -> list[int]:
    """COCOeval's loop: detections in the given (score) order, each takes the free box of highest IoU >= thresh."""
    free, matches = [True] * len(gts), []
    for det in dets:
        best, best_iou = -1, thresh
        for g, gt in enumerate(gts):
            value = _iou(det, gt)
            if free[g] and value >= best_iou and (best < 0 or value > best_iou):
                best, best_iou = g, value
        if best >= 0:
            free[best] = False
        matches.append(best)
    return matches


def reference_confusion(gt: dict, results: np.ndarray, score_thresh: float, iou_thresh: float) -> np.ndarray:
    size = len(CATEGORY_IDS) + 1
    matrix = np.zeros((size, size), dtype=np.int64)
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        boxes = [b for b, a in zip(xyxy, anns) if not a["iscrowd"]]
        labels = [CATEGORY_IDS.index(a["category_id"]) for a in anns if not a["iscrowd"]]
        crowds = [b for b, a in zip(xyxy, anns) if a["iscrowd"]]
        rows = sorted((r for r in results.tolist() if r[0] == image["id"] and r[5] >= score_thresh),
                      key=lambda r: -r[5])
        dets = [[r[1], r[2], r[1] + r[3], r[2] + r[4]] for r in rows]
        det_labels = [CATEGORY_IDS.index(int(r[6])) for r in rows]
        matches = reference_matches(dets, boxes, iou_thresh)
        for det, label, match in zip(dets, det_labels, matches):
            if match >= 0:
                matrix[labels[match], label] += 1
            elif not any(_ioa(det, crowd) >= iou_thresh for crowd in crowds):
                matrix[BACKGROUND, label] += 1
        for g, label in enumerate(labels):
            if g not in matches:
                matrix[label, BACKGROUND] += 1
    return matrix


def random_case(seed: int, num_images: int = 6) -> tuple[dict, np.ndarray]:
    """Ground truth with crowds and clustered boxes; detections jittered around them (duplicates, wrong classes,
    misses, strays), so greedy matching has conflicts to resolve."""
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "height": 200, "width": 200})
        centres = rng.uniform(30, 170, size=(int(rng.integers(0, 4)), 2))
        for _ in range(int(rng.integers(0, 7))):
            cx, cy = centres[rng.integers(len(centres))] + rng.normal(0, 8, 2) if len(centres) else (100, 100)
            w, h = rng.uniform(15, 50, 2)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "area": w * h,
                                "bbox": [cx - w / 2, cy - h / 2, w, h], "category_id": int(rng.choice(CATEGORY_IDS)),
                                "iscrowd": int(rng.random() < 0.1)})
        for ann in annotations[-7:]:
            if ann["image_id"] != image_id:
                continue
            for _ in range(int(rng.integers(0, 3))):
                x, y, w, h = ann["bbox"]
                jitter = rng.normal(0, 0.15, 4) * [w, h, w, h]
                category = ann["category_id"] if rng.random() < 0.7 else int(rng.choice(CATEGORY_IDS))
                results.append([image_id, x + jitter[0], y + jitter[1], abs(w + jitter[2]) + 1, abs(h + jitter[3]) + 1,
                                rng.uniform(0, 1), category])
        for _ in range(int(rng.integers(0, 3))):
            results.append([image_id, *rng.uniform(0, 150, 2), *rng.uniform(10, 50, 2), rng.uniform(0, 1),
                            int(rng.choice(CATEGORY_IDS))])
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS]}
    return gt, np.asarray(results, dtype=np.float64).reshape(-1, 7)


# ----------------------------------------------------------------------------- confusion matrix
@pytest.mark.parametrize("seed", range(6))
def test_confusion_matrix_equals_the_per_box_reference(seed: int) -> None:
    gt, results = random_case(seed)
    for score_thresh, iou_thresh in ((0.25, 0.5), (0.0, 0.3)):
        ours = detection_confusion_matrix(gt, results, CATEGORY_IDS, score_thresh=score_thresh, iou_thresh=iou_thresh)
        np.testing.assert_array_equal(ours, reference_confusion(gt, results, score_thresh, iou_thresh))
        # Every ground-truth box is counted exactly once, matched or missed.
        assert ours[:BACKGROUND].sum() == sum(not a["iscrowd"] for a in gt["annotations"])


@pytest.mark.parametrize("seed", range(10))
def test_greedy_matching_in_rounds_equals_one_detection_at_a_time(seed: int) -> None:
    """Dense clusters at a low threshold: long chains of detections competing for the same boxes."""
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(12, 2, generator=generator) * 20
    gts = torch.cat([corners, corners + 10 + torch.rand(12, 2, generator=generator) * 10], 1)
    pick = torch.randint(0, 12, (30,), generator=generator)
    dets = gts[pick] + torch.randn(30, 4, generator=generator) * 3
    dets[:, 2:] = torch.maximum(dets[:, 2:], dets[:, :2] + 1)
    expected = reference_matches(dets.tolist(), gts.tolist(), 0.2)
    assert match_greedy(dets, gts, 0.2).tolist() == expected
    assert sum(m >= 0 for m in expected) > 5


def _one_image(dets: list[tuple[list[float], float, int]], gts: list[tuple[list[float], int, bool]],
               score_thresh: float = 0.25) -> np.ndarray:
    det_boxes = torch.tensor([d[0] for d in dets], dtype=torch.float64).reshape(-1, 4)
    gt_boxes = torch.tensor([g[0] for g in gts], dtype=torch.float64).reshape(-1, 4)
    return image_confusion(det_boxes, torch.tensor([d[1] for d in dets], dtype=torch.float64),
                           torch.tensor([d[2] for d in dets], dtype=torch.long), gt_boxes,
                           torch.tensor([g[1] for g in gts], dtype=torch.long), 3,
                           gt_crowd=torch.tensor([g[2] for g in gts], dtype=torch.bool),
                           score_thresh=score_thresh).numpy()


def test_hand_made_cases_land_in_their_cells() -> None:
    """Rows are the true class, columns the predicted one, index 3 is background."""
    box, far = [10.0, 10.0, 50.0, 50.0], [100.0, 100.0, 140.0, 140.0]
    shifted = [12.0, 12.0, 52.0, 52.0]  # IoU 0.82 with box
    expected = np.zeros((4, 4), dtype=np.int64)

    matrix = _one_image([(shifted, 0.9, 1)], [(box, 1, False)])  # right class
    np.testing.assert_array_equal(matrix, _cell(expected, 1, 1))
    matrix = _one_image([(shifted, 0.9, 2)], [(box, 0, False)])  # wrong class: off the diagonal, no miss
    np.testing.assert_array_equal(matrix, _cell(expected, 0, 2))
    matrix = _one_image([(far, 0.9, 2)], [])  # a false positive: background row, its predicted class
    np.testing.assert_array_equal(matrix, _cell(expected, 3, 2))
    matrix = _one_image([], [(box, 1, False)])  # a missed box: its true class, background column
    np.testing.assert_array_equal(matrix, _cell(expected, 1, 3))
    # A duplicate: the higher score takes the box, the other is a false positive of its class.
    matrix = _one_image([(box, 0.5, 0), (shifted, 0.9, 1)], [(box, 0, False)])
    np.testing.assert_array_equal(matrix, _cell(_cell(expected, 0, 1), 3, 0))
    # Below the score threshold nothing counts; the box is then missed.
    matrix = _one_image([(shifted, 0.2, 1)], [(box, 1, False)])
    np.testing.assert_array_equal(matrix, _cell(expected, 1, 3))
    # A detection on a crowd region is not a false positive, and a crowd is never missed.
    matrix = _one_image([([20.0, 20.0, 40.0, 40.0], 0.9, 0)], [([0.0, 0.0, 200.0, 200.0], 0, True)])
    np.testing.assert_array_equal(matrix, expected)


def _cell(matrix: np.ndarray, row: int, col: int) -> np.ndarray:
    out = matrix.copy()
    out[row, col] += 1
    return out


def test_confusion_matrix_reads_coco_objects_and_subsets_images() -> None:
    from faster_coco_eval import COCO

    gt, results = random_case(3, num_images=8)
    whole = detection_confusion_matrix(COCO(gt), results, CATEGORY_IDS)
    np.testing.assert_array_equal(whole, detection_confusion_matrix(gt, results, CATEGORY_IDS))
    parts = sum(detection_confusion_matrix(gt, results, CATEGORY_IDS, image_ids=ids) for ids in ([1, 2, 3], [4, 5],
                                                                                                   [6, 7, 8]))
    np.testing.assert_array_equal(parts, whole)


# ----------------------------------------------------------------------------- precision-recall
@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_pr_curves_are_cocoevals_precision_slices(backend: str) -> None:
    gt, results = random_case(1, num_images=12)
    gt["categories"].append({"id": 30, "name": "never annotated"})  # a class without ground truth: -1 in COCOeval
    metrics, evaluator = evaluate_coco(gt, results, backend=backend, return_eval=True)
    assert metrics == evaluate_coco(gt, results, backend=backend)  # the option changes nothing else
    precision = evaluator.eval["precision"]  # (T, R, K, A, M)
    curves = pr_curves(precision, evaluator.params.iouThrs)
    raw_50 = precision[0, :, :, 0, 2].T  # IoU 0.5, area all, maxDets 100
    np.testing.assert_array_equal(curves["precision_50"][:3], raw_50[:3])
    np.testing.assert_allclose(curves["precision"][:3], precision[:, :, :3, 0, 2].mean(0).T)
    assert np.isnan(curves["precision_50"][3]).all() and np.isnan(curves["ap"][3])
    # Their means over recall and over the classes with ground truth are COCO's AP@[.5:.95] and AP50.
    assert np.nanmean(curves["ap"]) == pytest.approx(metrics["map"], abs=1e-12)
    assert np.nanmean(curves["ap_50"]) == pytest.approx(metrics["map_50"], abs=1e-12)
    assert 0.05 < metrics["map_50"] < 0.95


def test_evaluate_coco_without_detections_returns_no_evaluator() -> None:
    gt, _ = random_case(0)
    metrics, evaluator = evaluate_coco(gt, np.zeros((0, 7)), return_eval=True)
    assert evaluator is None and metrics["map"] == 0.0


def test_detection_pictures_are_written(tmp_path) -> None:
    gt, results = random_case(2, num_images=10)
    _, evaluator = evaluate_coco(gt, results, return_eval=True)
    names = ["circle", "square", "cross"]
    label_to_cat_id = {1: 3, 2: 8, 3: 20}
    assert category_names([8, 20, 99], names, label_to_cat_id) == ["square", "cross", "category 99"]
    paths = write_detection_pictures(tmp_path, evaluator, gt, results, list(range(1, 11)), names, label_to_cat_id)
    assert [p.name for p in paths] == ["pr_curves.png", "confusion_matrix.png", "confusion_matrix.csv"]
    _check_png(paths[0], min_size=(800, 300))
    _check_png(paths[1], min_size=(300, 300))
    lines = paths[2].read_text().splitlines()
    assert lines[0].split(",")[1:] == [*names, "background"]
    table = np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]])
    np.testing.assert_array_equal(table, detection_confusion_matrix(gt, results, CATEGORY_IDS))


# ----------------------------------------------------------------------------- generic plots
def _check_png(path, min_size: tuple[int, int] = (100, 100)) -> None:
    with Image.open(path) as image:
        image.verify()  # a complete, valid PNG
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        assert len(set(image.convert("L").getdata())) > 10  # something is drawn


def test_confusion_and_iou_pictures(tmp_path) -> None:
    matrix = np.array([[5, 1, 0], [0, 0, 0], [2, 2, 4]])
    np.testing.assert_allclose(normalize_rows(matrix), [[5 / 6, 1 / 6, 0], [0, 0, 0], [0.25, 0.25, 0.5]])
    _check_png(plot_confusion_matrix(torch.tensor(matrix), ["a", "b", "c"], tmp_path / "cm.png"))
    _check_png(plot_confusion_matrix(np.eye(30, dtype=np.int64) * 7, [f"c{k}" for k in range(30)], tmp_path / "big.png",
                                     normalize=False))  # too many cells to write numbers in
    _check_png(plot_iou_bars(torch.tensor([0.9, float("nan"), 0.3]), ["bg", "absent", "obj"], tmp_path / "iou.png"))
    with pytest.raises(ValueError, match="2 names"):
        plot_iou_bars([0.5, 0.2, 0.1], ["a", "b"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="3 class names for 4"):
        plot_pr_curves(np.zeros((10, 101, 4, 4, 3)), ["a", "b", "c"], tmp_path / "pr.png")


def _series(*pairs: tuple[float, float]) -> Series:
    steps, values = zip(*pairs)
    return Series(np.asarray(steps, dtype=float), np.asarray(values, dtype=float))


def test_training_panels_pick_the_logged_scalars(tmp_path) -> None:
    logged = {
        "train/loss_step": _series((0, 3.0), (1, 2.5), (2, 2.0)), "train/loss_epoch": _series((2, 2.5)),
        "train/dice": _series((0, 0.9)), "val/loss": _series((2, 2.2)), "lr-SGD": _series((0, 0.1), (1, 0.09)),
        "lr-SGD-momentum": _series((0, 0.9)), "val/acc1": _series((2, 0.5)), "val/map_small": _series((2, -1.0)),
        "val/map": _series((2, 0.1), (5, -1.0)), "epoch": _series((0, 0), (2, 0), (3, 1)),
    }
    panels = training_panels(logged)
    assert {title: list(entries) for title, entries in panels.items()} == {
        "loss": ["train/dice", "train/loss", "val/loss"], "learning rate": ["SGD"],
        "validation": ["val/acc1", "val/map"]}
    assert panels["loss"]["train/loss"] is logged["train/loss_step"]  # step level, not the epoch mean
    assert panels["validation"]["val/map"].steps.tolist() == [2.0]  # COCO's -1 (no such objects) left out
    _check_png(plot_training_curves(logged, tmp_path / "curves.png", title="a run"), min_size=(1000, 300))
    _check_png(plot_training_curves({}, tmp_path / "empty.png"))


def test_csv_and_tensorboard_logs_read_the_same(tmp_path) -> None:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    logged = [({"train/loss_step": 2.0, "lr-AdamW": 0.001, "epoch": 0}, 0),
              ({"train/loss_step": 1.5, "lr-AdamW": 0.002, "epoch": 0}, 1),
              ({"val/loss": 1.25, "val/miou": 0.5, "epoch": 0}, 1)]
    readings = []
    for logger in (CSVLogger(tmp_path / "csv", name="run"), TensorBoardLogger(tmp_path / "tb", name="run")):
        for metrics, step in logged:
            logger.log_metrics(metrics, step)
        logger.finalize("success")
        readings.append(read_metrics(find_log(tmp_path / ("csv" if isinstance(logger, CSVLogger) else "tb"))))
    csv, tensorboard = readings
    assert set(csv) == set(tensorboard) == {"train/loss_step", "lr-AdamW", "epoch", "val/loss", "val/miou"}
    for name in csv:
        np.testing.assert_array_equal(csv[name].steps, tensorboard[name].steps)
        np.testing.assert_allclose(csv[name].values, tensorboard[name].values, rtol=1e-7)  # TB stores float32
    assert csv["train/loss_step"].values.tolist() == [2.0, 1.5]


def test_find_log_takes_the_newest_training_log(tmp_path) -> None:
    import os

    def write(folder: str, header: str, mtime: int) -> None:
        path = tmp_path / folder / "metrics.csv"
        path.parent.mkdir(parents=True)
        path.write_text(f"{header}\n1,0.5\n")
        os.utime(path, (mtime, mtime))

    write("csv/version_0", "step,train/loss", 100)  # fit
    write("csv/version_1", "step,train/loss", 200)  # a resumed fit
    write("csv/version_2", "step,val/miou", 300)  # validate: no training scalars
    assert find_log(tmp_path) == tmp_path / "csv/version_1/metrics.csv"
    assert find_log(tmp_path / "csv/version_0") == tmp_path / "csv/version_0"
    write("validate_only/version_0", "step,val/miou", 400)
    with pytest.raises(FileNotFoundError, match="no training log under .*validate_only"):
        find_log(tmp_path / "validate_only")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_log(tmp_path / "nowhere")


def test_evaluation_pictures_go_to_the_loggers_folder(tmp_path) -> None:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.trainer.states import TrainerFn

    from mobilenetv2_dense.pictures.charts import evaluation_folder

    options = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False}
    assert evaluation_folder(L.Trainer(logger=False, **options)) is None  # no logger: no files
    trainer = L.Trainer(logger=CSVLogger(tmp_path, name="csv"), **options)
    trainer.state.fn = TrainerFn.TESTING
    assert evaluation_folder(trainer) == tmp_path / "csv" / "version_0" / "test"
