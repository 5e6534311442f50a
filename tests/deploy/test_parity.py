"""The export's detection parity figures on detection sets built by hand: detections paired one to one across the
set, and no difference claimed where nothing was compared."""

from __future__ import annotations

import torch

from mobilenetv2_dense.commands.parity import DetectionFigures, match_detections


def _detections(boxes: list[list[float]], labels: list[int], scores: list[float]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores)}


def _figures(eager: list[dict], deployed: list[dict]) -> dict:
    figures = DetectionFigures(label_to_cat_id=None)
    targets = [{"image_id": i, "orig_size": torch.tensor([64, 64])} for i in range(len(eager))]
    figures.add(eager, deployed, targets, (64, 64))
    return figures.comparison()


BOXES = [[4.0, 4.0, 20.0, 20.0], [30.0, 30.0, 60.0, 50.0]]


def test_tied_detections_in_another_order_are_paired_by_box():
    """Two detections of equal score come out swapped: each is compared with its own counterpart."""
    eager = _detections(BOXES, [1, 1], [0.5, 0.5])
    deployed = _detections([BOXES[1], [4.0, 4.0, 20.0, 20.5]], [1, 1], [0.5, 0.49])
    rows, cols = match_detections(eager, deployed)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    figures = _figures([eager], [deployed])
    assert figures["matched_detections"] == 2 and figures["max_box_diff_px"] == 0.5
    assert abs(figures["max_score_diff"] - 0.01) < 1e-6 and "not_comparable" not in figures


def test_other_labels_everywhere_are_not_comparable_rather_than_zero():
    """The same boxes with other labels on every image (an int8 file that changed every class): nothing pairs, so
    the differences are None with the reason, never 0.0."""
    eager = [_detections(BOXES, [1, 2], [0.9, 0.8]), _detections(BOXES[:1], [3], [0.7])]
    deployed = [_detections(BOXES, [2, 1], [0.9, 0.8]), _detections(BOXES[:1], [1], [0.7])]
    figures = _figures(eager, deployed)
    assert figures["images_with_other_labels"] == 1 and figures["images"] == 2  # image 0 has the same label set
    assert figures["matched_detections"] == 0 and figures["detections"] == figures["deployed_detections"] == 3
    assert figures["max_box_diff_px"] is None and figures["max_score_diff"] is None
    assert "no detection of one side has a counterpart" in figures["not_comparable"]


def test_only_paired_detections_are_measured():
    """One detection pairs, one moved too far (IoU < 0.5) does not: the differences are the pair's, the other
    detections are counted as unpaired."""
    eager = _detections(BOXES, [1, 1], [0.9, 0.8])
    deployed = _detections([BOXES[0], [45.0, 30.0, 75.0, 50.0]], [1, 1], [0.9, 0.8])
    figures = _figures([eager], [deployed])
    assert figures["matched_detections"] == 1 and figures["max_box_diff_px"] == 0.0


def test_no_detections_on_either_side():
    empty = _detections([], [], [])
    figures = _figures([empty], [empty])
    assert figures["max_box_diff_px"] is None and figures["not_comparable"] == "neither side detected anything"
