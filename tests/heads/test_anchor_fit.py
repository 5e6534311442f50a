"""Anchors fitted to data: best possible recall against a brute-force SSD matching, the nearest-cell IoU against
``box_iou`` over every anchor, the fit on thin boxes, counts per location, determinism, and the generator's options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from mobilenetv2_dense.heads.anchor_fit import (
    best_possible_recall,
    fit_anchor_settings,
    nearest_anchor_iou,
)
from mobilenetv2_dense.heads.anchors import AnchorSettings, box_specs, num_anchors_per_location, ssd_anchors

DEFAULT_SETTINGS = AnchorSettings()  # TF's ssd_anchor_generator values

pytestmark = pytest.mark.usefixtures("one_thread")

MAPS_192 = [(12, 12), (6, 6), (3, 3), (2, 2), (1, 1), (1, 1)]


def random_boxes(generator: torch.Generator, count: int, size: float, *, thin: bool = False) -> torch.Tensor:
    """``(count, 4)`` xyxy boxes inside a ``size`` square; ``thin``: 1:5..1:10 along x or y."""
    long = size * (0.1 + 0.6 * torch.rand(count, generator=generator))
    short = long / (5 + 5 * torch.rand(count, generator=generator)) if thin else long * (
        0.5 + torch.rand(count, generator=generator))
    vertical = torch.rand(count, generator=generator) < 0.5
    w, h = torch.where(vertical, short, long), torch.where(vertical, long, short)
    x0 = torch.rand(count, generator=generator) * (size - w)
    y0 = torch.rand(count, generator=generator) * (size - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def brute_force_recall(gt_boxes: list[torch.Tensor], anchors: torch.Tensor, threshold: float) -> tuple[float, float]:
    """SSD matching written out box by box and anchor by anchor: each anchor takes its best box at IoU >= the
    threshold, then each box in turn takes its best anchor; a box is recalled when it owns an anchor at >= the
    threshold."""
    recalled, best_sum, total = 0, 0.0, 0
    for boxes in gt_boxes:
        iou = box_iou(boxes, anchors).tolist() if len(boxes) else []
        owner = []
        for a in range(len(anchors)):
            column = [iou[g][a] for g in range(len(boxes))]
            best = max(range(len(boxes)), key=lambda g: column[g]) if column else -1
            owner.append(best if column and column[best] >= threshold else -1)
        for g in range(len(boxes)):
            owner[max(range(len(anchors)), key=lambda a: iou[g][a])] = g
        for g in range(len(boxes)):
            total += 1
            best_sum += max(iou[g])
            recalled += any(owner[a] == g and iou[g][a] >= threshold for a in range(len(anchors)))
    return recalled / total, best_sum / total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bpr_matches_brute_force_ssd_matching(seed: int):
    generator = torch.Generator().manual_seed(seed)
    anchors = ssd_anchors([(4, 4), (2, 2), (1, 1)], (64, 64), AnchorSettings(min_scale=0.15, max_scale=0.7))
    # crowded images, so that boxes compete for anchors; one image without boxes
    counts = [int(c) for c in torch.randint(1, 9, (6,), generator=generator)] + [0]
    gt_boxes = [random_boxes(generator, c, 64.0, thin=seed == 2) for c in counts]
    expected_bpr, expected_iou = brute_force_recall(gt_boxes, anchors, 0.5)
    for max_elements in (1 << 24, 200):  # one chunk, and one image per chunk
        stats = best_possible_recall(gt_boxes, anchors, max_elements=max_elements)
        assert stats.boxes == sum(counts)
        assert stats.bpr == pytest.approx(expected_bpr)
        assert stats.mean_best_iou == pytest.approx(expected_iou, rel=1e-6)


def test_bpr_counts_matching_competition_and_not_the_forced_anchor():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [40.0, 40.0, 50.0, 50.0]])
    # box 0 is the anchor itself; box 1 (IoU 0.81 with anchor 0) loses anchor 0 to it; box 2 only gets its forced
    # best anchor, at IoU 0.25
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 9.0, 9.0], [40.0, 40.0, 60.0, 60.0]])
    stats = best_possible_recall([gt], anchors)
    assert stats.bpr == pytest.approx(1 / 3)
    assert stats.mean_best_iou == pytest.approx((1 + 0.81 + 0.25) / 3)
    with pytest.raises(ValueError, match="no ground-truth boxes"):
        best_possible_recall([torch.zeros(0, 4)], anchors)


@pytest.mark.parametrize("image_size, maps", [((192, 192), MAPS_192), ((97, 131), [(7, 9), (4, 5), (2, 3)])])
def test_nearest_cell_iou_equals_the_best_over_every_anchor(image_size, maps):
    generator = torch.Generator().manual_seed(0)
    boxes = torch.cat([random_boxes(generator, 300, min(image_size)),
                       random_boxes(generator, 300, min(image_size), thin=True)]).double()
    boxes[:40] += 30  # some past the image edge, so the nearest cell is clamped
    settings = AnchorSettings(aspect_ratios=(1.0, 7.0, 0.15), scales=([0.1, 0.4, 0.8][:len(maps)] * 2)[:len(maps)])
    specs = box_specs(settings, num_layers=len(maps))
    anchors = ssd_anchors(maps, image_size, settings, dtype=torch.float64)
    torch.testing.assert_close(nearest_anchor_iou(boxes, specs, maps, image_size),
                               box_iou(boxes, anchors).amax(dim=1), rtol=0, atol=1e-9)


def thin_boxes(images: int = 120) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [random_boxes(generator, 3, 192.0, thin=True) for _ in range(images)]


@pytest.mark.parametrize("reduced", [True, False])
def test_fit_raises_bpr_on_thin_boxes_and_keeps_anchor_counts(reduced: bool):
    gt = thin_boxes()
    given = AnchorSettings(reduce_boxes_in_lowest_layer=reduced)
    fit = fit_anchor_settings(torch.cat(gt), given, feature_sizes=MAPS_192, image_size=(192, 192), generations=200)
    before = best_possible_recall(gt, ssd_anchors(MAPS_192, (192, 192), given))
    after = best_possible_recall(gt, ssd_anchors(MAPS_192, (192, 192), fit.settings))
    assert before.bpr < 0.25 and after.bpr > before.bpr + 0.3, (before, after)
    assert after.mean_best_iou > before.mean_best_iou + 0.05
    assert fit.fitness_after > fit.fitness_before
    assert num_anchors_per_location(fit.settings, num_layers=6) == num_anchors_per_location(
        AnchorSettings(reduce_boxes_in_lowest_layer=reduced), num_layers=6)
    assert (fit.settings.lowest_layer_boxes is not None) == reduced
    # thin boxes want thin anchors: some ratio beyond 1:4 each way
    ratios = np.array(fit.settings.aspect_ratios)
    assert ratios.max() > 4 and ratios.min() < 0.25


def test_fit_is_deterministic_under_a_seed():
    boxes = torch.cat(thin_boxes(60))  # 180 boxes, 100 of them sampled by the seed
    run = lambda seed: fit_anchor_settings(boxes, DEFAULT_SETTINGS, feature_sizes=MAPS_192, image_size=(192, 192),
                                           generations=60, seed=seed, max_boxes=100)
    first, again, other = run(0), run(0), run(1)
    assert first == again
    assert other.settings != first.settings


def test_fit_keeps_the_given_settings_when_nothing_scores_higher():
    # boxes that are exactly some of the default anchors: the given settings are already perfect
    anchors = ssd_anchors(MAPS_192, (192, 192))
    boxes = anchors[torch.arange(0, len(anchors), 7)]
    boxes = boxes[(boxes >= 0).all(dim=1) & (boxes <= 192).all(dim=1)]
    fit = fit_anchor_settings(boxes, DEFAULT_SETTINGS, feature_sizes=MAPS_192, image_size=(192, 192),
                              generations=50)
    assert fit.start == "given" and fit.settings == DEFAULT_SETTINGS
    assert fit.fitness_before == pytest.approx(2.0, abs=1e-4)  # every box is an anchor (1/3 as 0.3333)


def test_generator_explicit_scales_and_lowest_layer_boxes():
    linear = box_specs(num_layers=6)
    explicit = box_specs(AnchorSettings(scales=[0.2 + 0.15 * k for k in range(6)]), num_layers=6)
    for layer, other in zip(linear, explicit):
        assert [s for s, _ in layer] == pytest.approx([s for s, _ in other])
    thin_lowest = [[0.07, 8.0], [0.1, 0.125], [0.2, 1.0]]
    specs = box_specs(AnchorSettings(scales=[0.05, 0.3, 0.6], lowest_layer_boxes=thin_lowest), num_layers=3)
    assert specs[0] == [(0.07, 8.0), (0.1, 0.125), (0.2, 1.0)]
    assert specs[1][0] == (0.3, 1.0) and specs[2][-1][0] == pytest.approx(math.sqrt(0.6))  # interpolated to 1.0
    with pytest.raises(ValueError, match="one per feature map"):
        box_specs(AnchorSettings(scales=[0.1, 0.2]), num_layers=3)
    with pytest.raises(ValueError, match="reduce_boxes_in_lowest_layer=True"):
        AnchorSettings(reduce_boxes_in_lowest_layer=False, lowest_layer_boxes=[[0.1, 1.0]])
    with pytest.raises(ValueError, match="positive"):
        AnchorSettings(lowest_layer_boxes=[[0.1, 0.0], [0.1, 1.0], [0.1, 2.0]])
