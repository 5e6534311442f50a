"""Anchor matching: IoU threshold, SSD's forced best anchor, empty images, and torchvision's SSDMatcher."""

from __future__ import annotations

import torch
from torchvision.models.detection._utils import SSDMatcher
from torchvision.ops import box_iou

from mobilenetv2_dense.heads.matcher import match_anchors

ANCHORS = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],  # 0: the gt box itself
    [0.0, 0.0, 10.0, 20.0],  # 1: IoU 0.5 with gt 0 (exactly the threshold)
    [0.0, 0.0, 10.0, 21.0],  # 2: IoU 100/210 < 0.5
    [50.0, 50.0, 60.0, 60.0],  # 3: far from gt 0; IoU 0.25 with gt 1, its best anchor
    [100.0, 100.0, 110.0, 110.0],  # 4: touches nothing
])


def test_threshold_and_forced_best_anchor():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 70.0]])
    matches = match_anchors([gt], ANCHORS, iou_threshold=0.5)
    assert matches.dtype == torch.int64 and matches.shape == (1, 5)
    # anchor 3 has IoU 0.25 < 0.5 with gt 1, but it is gt 1's best anchor, so it is forced positive
    assert matches.tolist() == [[0, 0, -1, 1, -1]]


def test_empty_images_and_padding_in_a_batch():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 70.0]])
    matches = match_anchors([torch.zeros(0, 4), gt, gt[1:]], ANCHORS)
    assert matches.tolist() == [[-1] * 5, [0, 0, -1, 1, -1], [-1, -1, -1, 0, -1]]
    assert match_anchors([torch.zeros(0, 4)] * 2, ANCHORS).tolist() == [[-1] * 5] * 2


def test_matches_torchvision_ssd_matcher_on_random_boxes():
    g = torch.Generator().manual_seed(0)

    def boxes(n: int) -> torch.Tensor:
        xy = torch.rand(n, 2, generator=g) * 200
        return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 80 + 5], dim=1)

    anchors = boxes(400)
    gts = [boxes(7), boxes(1), boxes(12)]
    ours = match_anchors(gts, anchors, iou_threshold=0.5)
    reference = SSDMatcher(0.5)
    for image, gt in enumerate(gts):
        # torchvision also runs the low-quality step of its Matcher (below-threshold anchors tied with a gt's
        # best IoU) only when a gt's best anchor is below 0.5; with random floats the best anchor is unique.
        theirs = reference(box_iou(gt, anchors))
        assert torch.equal(ours[image], theirs)
