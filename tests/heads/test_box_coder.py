"""Box coder: parity with torchvision's BoxCoder, round trips, batching and the exp clamp."""

from __future__ import annotations

import math

import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from mobilenetv2_dense.heads.box_coder import BoxCoder


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 300
    wh = torch.rand(n, 2, generator=generator) * 100 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_matches_torchvision_box_coder():
    g = torch.Generator().manual_seed(0)
    gt, anchors = random_boxes(64, g), random_boxes(64, g)
    ours, theirs = BoxCoder(), TorchvisionBoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(ours.encode(gt, anchors), theirs.encode_single(gt, anchors))
    codes = torch.randn(64, 4, generator=g) * 3
    torch.testing.assert_close(ours.decode(codes, anchors), theirs.decode_single(codes, anchors))


def test_round_trip_and_batch_broadcast():
    g = torch.Generator().manual_seed(1)
    anchors = random_boxes(50, g)  # (A, 4)
    gt = torch.stack([random_boxes(50, g) for _ in range(3)])  # (N, A, 4)
    coder = BoxCoder()
    codes = coder.encode(gt, anchors)  # anchors broadcast over the batch
    assert codes.shape == (3, 50, 4)
    torch.testing.assert_close(coder.decode(codes, anchors), gt, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(codes[1], coder.encode(gt[1], anchors))


def test_hand_computed_code_and_clamp():
    coder = BoxCoder()
    anchor = torch.tensor([0.0, 0.0, 10.0, 20.0])  # centre (5, 10), 10 x 20
    gt = torch.tensor([1.0, 2.0, 21.0, 22.0])  # centre (11, 12), 20 x 20
    expected = torch.tensor([10 * 6 / 10, 10 * 2 / 20, 5 * math.log(2.0), 5 * math.log(1.0)])
    torch.testing.assert_close(coder.encode(gt, anchor), expected)
    # a huge dw is clamped at log(1000 / 16) before exp, so the width is at most 62.5 anchor widths
    decoded = coder.decode(torch.tensor([0.0, 0.0, 1e4, 0.0]), anchor)
    torch.testing.assert_close(decoded[2] - decoded[0], torch.tensor(10 * 1000 / 16))
