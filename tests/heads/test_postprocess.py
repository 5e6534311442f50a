"""Post-processing: thresholds, NMS within and across classes, top-k, clipping, torchvision's SSD as reference."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.ssd import SSD

from mobilenetv2_dense.heads.box_coder import BoxCoder
from mobilenetv2_dense.heads.postprocess import PostProcessing, postprocess_detections

ANCHORS = torch.tensor([
    [10.0, 10.0, 50.0, 50.0],
    [10.0, 10.0, 50.0, 50.0],  # a duplicate of anchor 0
    [12.0, 10.0, 52.0, 50.0],  # overlaps anchor 0 with IoU 38 / 42
    [100.0, 100.0, 140.0, 140.0],
])


def logits_for(probabilities: list[list[float]]) -> torch.Tensor:
    """``(1, A, K + 1)`` logits whose softmax is exactly ``probabilities`` (rows sum to 1)."""
    return torch.tensor(probabilities).log()[None]


def run(probabilities: list[list[float]], **settings) -> dict[str, torch.Tensor]:
    zeros = torch.zeros(1, len(probabilities), 4)  # zero offsets decode to the anchors themselves
    return postprocess_detections(zeros, logits_for(probabilities), ANCHORS[: len(probabilities)], BoxCoder(),
                                  image_size=(200, 200), settings=PostProcessing(**settings))[0]


def test_nms_removes_a_duplicate_but_keeps_other_classes_and_places():
    result = run([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.0, 0.7], [0.4, 0.6, 0.0]], score_thresh=0.05)
    # anchor 1 (class 1, 0.8) is suppressed by anchor 0; anchor 2 overlaps too but is class 2, so it stays
    torch.testing.assert_close(result["scores"], torch.tensor([0.9, 0.7, 0.6]))
    assert result["labels"].tolist() == [1, 2, 1] and result["labels"].dtype == torch.int64
    torch.testing.assert_close(result["boxes"], ANCHORS[[0, 2, 3]])


def test_score_threshold_topk_and_detection_limit():
    probabilities = [[0.1, 0.9, 0.0], [0.97, 0.03, 0.0], [0.3, 0.0, 0.7], [0.4, 0.6, 0.0]]
    assert run(probabilities, score_thresh=0.05)["scores"].min() > 0.05  # 0.03 and the zeros are dropped
    torch.testing.assert_close(run(probabilities, topk_candidates=2)["scores"], torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(run(probabilities, detections_per_img=1)["scores"], torch.tensor([0.9]))
    assert len(run(probabilities, score_thresh=0.95)["scores"]) == 0


def test_decode_clip_and_focal_scores():
    codes = torch.tensor([[[0.0, 0.0, 5 * math.log(2.0), 0.0]]])  # twice as wide: x from 0 to 80 ...
    logits = torch.tensor([[[0.0, 2.0]]])
    anchors = torch.tensor([[20.0, 10.0, 60.0, 50.0]])
    out = postprocess_detections(codes, logits, anchors, BoxCoder(), image_size=(100, 70), classification="focal")[0]
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 10.0, 70.0, 50.0]]))  # ... clipped at W = 70
    torch.testing.assert_close(out["scores"], torch.tensor([2.0]).sigmoid())


def test_matches_torchvision_ssd_postprocess_when_topk_does_not_bind():
    g = torch.Generator().manual_seed(0)
    num_anchors, classes = 300, 5
    xy = torch.rand(num_anchors, 2, generator=g) * 250
    anchors = torch.cat([xy, xy + torch.rand(num_anchors, 2, generator=g) * 60 + 10], dim=1)
    outputs = {"bbox_regression": torch.randn(2, num_anchors, 4, generator=g) * 0.5,
               "cls_logits": torch.randn(2, num_anchors, classes + 1, generator=g) * 2}
    settings = dict(score_thresh=0.2, nms_thresh=0.45, detections_per_img=50)
    ours = postprocess_detections(outputs["bbox_regression"], outputs["cls_logits"], anchors, BoxCoder(),
                                  image_size=(300, 280),
                                  settings=PostProcessing(topk_candidates=num_anchors * classes, **settings))
    reference = SimpleNamespace(box_coder=TorchvisionBoxCoder(weights=(10.0, 10.0, 5.0, 5.0)),
                                topk_candidates=num_anchors, **settings)
    theirs = SSD.postprocess_detections(reference, outputs, [anchors] * 2, [(300, 280)] * 2)
    for mine, ref in zip(ours, theirs):
        assert len(mine["scores"]) > 10
        torch.testing.assert_close(mine["scores"], ref["scores"])
        torch.testing.assert_close(mine["boxes"], ref["boxes"])
        assert torch.equal(mine["labels"], ref["labels"])
