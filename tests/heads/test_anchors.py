"""TF SSD anchors: hand-computed boxes, TF's special cases, and parity with torchvision's DefaultBoxGenerator."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from mobilenetv2_dense.heads.anchors import AnchorSettings, box_specs, num_anchors_per_location, ssd_anchors

PAPER_MAPS_320 = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def test_paper_anchor_counts():
    assert num_anchors_per_location(num_layers=6) == [3, 6, 6, 6, 6, 6]
    assert num_anchors_per_location(AnchorSettings(reduce_boxes_in_lowest_layer=False), num_layers=6) == [6] * 6
    no_interpolated = AnchorSettings(interpolated_scale_aspect_ratio=0.0)
    assert num_anchors_per_location(no_interpolated, num_layers=6) == [3, 5, 5, 5, 5, 5]
    # 20*20*3 + (100 + 25 + 9 + 4 + 1) * 6; 1917 at 300x300 is the well-known TF SSD MobileNet count
    assert ssd_anchors(PAPER_MAPS_320, (320, 320)).shape == (2034, 4)
    assert ssd_anchors([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], (300, 300)).shape == (1917, 4)


def test_scales_follow_tf_create_ssd_anchors():
    specs = box_specs(num_layers=6)
    scales = [0.2 + 0.15 * k for k in range(6)] + [1.0]  # linear 0.2 .. 0.95, then TF's appended 1.0
    assert specs[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
    for k in range(1, 6):
        assert [ar for _, ar in specs[k]] == pytest.approx([1.0, 2.0, 0.5, 3.0, 1 / 3, 1.0])
        assert [s for s, _ in specs[k][:5]] == pytest.approx([scales[k]] * 5)
        assert specs[k][5][0] == pytest.approx(math.sqrt(scales[k] * scales[k + 1]))
    assert specs[5][5][0] == pytest.approx(math.sqrt(0.95))  # the last layer interpolates towards 1.0


def test_hand_computed_2x2_and_1x1_maps():
    anchors = ssd_anchors([(2, 2), (1, 1)], (100, 100))
    assert anchors.shape == (2 * 2 * 3 + 6, 4)
    r2 = math.sqrt(2.0)
    # layer 0, cell (y=0, x=0), centre (25, 25): (0.1, 1) -> 10x10; (0.2, 2) -> w 20*sqrt2, h 20/sqrt2; (0.2, 0.5)
    expected_cell0 = torch.tensor([
        [20.0, 20.0, 30.0, 30.0],
        [25 - 10 * r2, 25 - 10 / r2, 25 + 10 * r2, 25 + 10 / r2],
        [25 - 10 / r2, 25 - 10 * r2, 25 + 10 / r2, 25 + 10 * r2],
    ])
    torch.testing.assert_close(anchors[0:3], expected_cell0)
    # x varies before y: anchors 3..5 sit at cell (y=0, x=1), centre (75, 25); 9..11 at (y=1, x=1)
    torch.testing.assert_close(anchors[3], torch.tensor([70.0, 20.0, 80.0, 30.0]))
    torch.testing.assert_close(anchors[6], torch.tensor([20.0, 70.0, 30.0, 80.0]))
    torch.testing.assert_close(anchors[9], torch.tensor([70.0, 70.0, 80.0, 80.0]))
    # layer 1 (the last): s = 0.95 at centre (50, 50), then the sqrt(0.95 * 1.0) square
    s, s_int = 95.0, 100 * math.sqrt(0.95)
    torch.testing.assert_close(anchors[12], torch.tensor([50 - s / 2, 50 - s / 2, 50 + s / 2, 50 + s / 2]))
    w3, h3 = s * math.sqrt(3), s / math.sqrt(3)
    torch.testing.assert_close(anchors[15], torch.tensor([50 - w3 / 2, 50 - h3 / 2, 50 + w3 / 2, 50 + h3 / 2]))
    torch.testing.assert_close(anchors[17], torch.tensor([50 - s_int / 2] * 2 + [50 + s_int / 2] * 2))


def test_non_square_image_uses_shorter_side_and_is_not_clipped():
    # TF normalises the base anchor by min(H, W): an ar=1 anchor stays square in pixels.
    anchors = ssd_anchors([(1, 2)], (100, 200), AnchorSettings(min_scale=0.5, max_scale=0.5,
                                                              reduce_boxes_in_lowest_layer=False, aspect_ratios=(1.0,)))
    torch.testing.assert_close(anchors[0], torch.tensor([25.0, 25.0, 75.0, 75.0]))  # centre (50, 50), side 50
    torch.testing.assert_close(anchors[2], torch.tensor([125.0, 25.0, 175.0, 75.0]))  # centre (150, 50)
    big = ssd_anchors(PAPER_MAPS_320, (320, 320))
    assert big.min() < 0 and big.max() > 320  # TF does not clip by default


def test_layers_match_torchvision_default_boxes():
    # Without TF's reduced lowest layer the boxes equal torchvision's SSD default boxes, up to the order of
    # the boxes at one location: torchvision puts the interpolated square second, TF puts it last.
    ours = ssd_anchors(PAPER_MAPS_320, (320, 320), AnchorSettings(reduce_boxes_in_lowest_layer=False))
    generator = DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95, clip=False)
    images = ImageList(torch.zeros(1, 3, 320, 320), [(320, 320)])
    maps = [torch.zeros(1, 1, h, w) for h, w in PAPER_MAPS_320]
    theirs = generator(images, maps)[0]
    ours = ours.reshape(-1, 6, 4)[:, [0, 5, 1, 2, 3, 4]].reshape(-1, 4)  # (L, B, 4) with B in their order
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="num_layers"):
        num_anchors_per_location(num_layers=0)
    with pytest.raises(ValueError, match="aspect ratios"):
        ssd_anchors([(2, 2)], (64, 64), AnchorSettings(aspect_ratios=(1.0, -2.0)))
