"""DeepLabv3 head and DeepLabv3+ decoder: shapes, atrous rates, parity with torchvision's ASPP, batch-1 BN."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

from mobilenetv2_dense.heads.deeplab import (
    DeepLabV3Head,
    DeepLabV3PlusDecoder,
    ImagePooling,
    atrous_rates_for,
    label_map,
    upsample_logits,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine terms, so parity tests cannot pass on identity BNs."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("aspp", [False, True])
@pytest.mark.parametrize("size", [(32, 32), (17, 13), (1, 1)])
def test_head_shapes(aspp: bool, size: tuple[int, int]) -> None:
    head = DeepLabV3Head(320, 21, aspp=aspp).eval()
    assert head(torch.randn(2, 320, *size)).shape == (2, 21, *size)
    features = DeepLabV3Head(320, None, aspp=aspp, channels=64).eval()
    assert features.classifier is None
    assert features(torch.randn(2, 320, *size)).shape == (2, 64, *size)


def test_branch_count_and_widths() -> None:
    lite, aspp = DeepLabV3Head(320, 21, aspp=False), DeepLabV3Head(320, 21, aspp=True)
    assert len(lite.branches) == 1 and lite.branches[0][0].kernel_size == (1, 1)
    assert [b[0].kernel_size for b in aspp.branches] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    # 1x1 + pooling (lite) or 1x1 + 3 atrous + pooling (ASPP) branches of 256 feed the projection.
    assert lite.project[0][0].in_channels == 2 * 256 and aspp.project[0][0].in_channels == 5 * 256
    assert all(isinstance(b[2], nn.ReLU) and isinstance(b[1], nn.BatchNorm2d) for b in aspp.branches)
    assert aspp.project[1].p == pytest.approx(0.1)


@pytest.mark.parametrize("output_stride, rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_atrous_rates(output_stride: int, rates: tuple[int, int, int]) -> None:
    assert atrous_rates_for(output_stride) == rates
    head = DeepLabV3Head(320, 21, aspp=True, atrous_rates=rates)
    assert [b[0].dilation for b in head.branches[1:]] == [(r, r) for r in rates]
    assert [b[0].padding for b in head.branches[1:]] == [(r, r) for r in rates]


def test_atrous_rates_reject_other_strides() -> None:
    with pytest.raises(ValueError, match="output_stride must be 8 or 16, got 32"):
        atrous_rates_for(32)


def test_set_atrous_rates_equals_fresh_head() -> None:
    torch.manual_seed(0)
    switched = DeepLabV3Head(32, 5, aspp=True, atrous_rates=(6, 12, 18), channels=16)
    fresh = DeepLabV3Head(32, 5, aspp=True, atrous_rates=(12, 24, 36), channels=16)
    fresh.load_state_dict(switched.state_dict())
    switched.set_atrous_rates((12, 24, 36))
    assert switched.atrous_rates == (12, 24, 36)
    x = torch.randn(2, 32, 40, 40)
    switched.eval(), fresh.eval()
    torch.testing.assert_close(switched(x), fresh(x), rtol=0, atol=0)
    DeepLabV3Head(32, 5, aspp=False).set_atrous_rates((12, 24, 36))  # no atrous branches: nothing to change


@pytest.mark.parametrize("rates", [(), (6, 12, 18)])
def test_matches_torchvision_aspp(rates: tuple[int, ...]) -> None:
    """Eval-mode parity with torchvision's ASPP (same branch order); dropout differs but is off in eval."""
    torch.manual_seed(0)
    ours = DeepLabV3Head(48, None, aspp=bool(rates), atrous_rates=rates or (6, 12, 18), channels=32)
    reference = ASPP(48, list(rates), out_channels=32)
    _randomise_bn(ours)
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    assert len(ours_state) == len(ref_state)
    mapped = {}
    for (key, value), ref_key in zip(ours_state.items(), ref_state):
        assert value.shape == ref_state[ref_key].shape, (key, ref_key)
        mapped[ref_key] = value
    reference.load_state_dict(mapped)
    x = torch.randn(2, 48, 19, 23)
    torch.testing.assert_close(ours.eval()(x), reference.eval()(x))


def test_image_pooling_batch_one_in_training() -> None:
    """torchvision's ASPPPooling raises at batch 1 in training; ours falls back to running statistics."""
    torch.manual_seed(0)
    reference = ASPP(16, [], out_channels=8).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        reference(torch.randn(1, 16, 9, 9))

    pooling = ImagePooling(16, 8)
    _randomise_bn(pooling)
    norm = pooling.conv[1]
    before = norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone()
    x = torch.randn(1, 16, 9, 9)
    trained = pooling.train()(x)
    assert trained.shape == (1, 8, 9, 9)
    torch.testing.assert_close(trained, pooling.eval()(x))  # running statistics, as in eval
    assert all(torch.equal(a, b) for a, b in zip(before, (norm.running_mean, norm.running_var,
                                                            norm.num_batches_tracked)))
    assert trained.std() > 0  # not the constant beta of batch statistics over one value

    pooling.train()(torch.randn(4, 16, 9, 9))  # a real batch updates the statistics as usual
    assert not torch.equal(before[0], norm.running_mean) and norm.num_batches_tracked == before[2] + 1


def test_image_pooling_is_spatially_constant() -> None:
    out = ImagePooling(16, 8).eval()(torch.randn(2, 16, 7, 5))
    assert out.shape == (2, 8, 7, 5)
    torch.testing.assert_close(out, out[:, :, :1, :1].expand_as(out))


def test_head_trains_at_batch_one() -> None:
    head = DeepLabV3Head(32, 4, aspp=True, channels=16).train()
    out = head(torch.randn(1, 32, 9, 9))
    out.square().mean().backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("high, low", [((8, 8), (32, 32)), ((24, 32), (94, 125)), ((2, 2), (5, 7))])
def test_decoder_shapes(high: tuple[int, int], low: tuple[int, int]) -> None:
    decoder = DeepLabV3PlusDecoder(24, num_classes=21).eval()
    out = decoder(torch.randn(2, 256, *high), torch.randn(2, 24, *low))
    assert out.shape == (2, 21, *low)


def test_decoder_layers() -> None:
    decoder = DeepLabV3PlusDecoder(24, 64, num_classes=3)
    assert decoder.project_low_level[0].out_channels == 48
    depthwise = [m for m in decoder.refine.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [(m.in_channels, m.groups, m.kernel_size) for m in depthwise] == [(112, 112, (3, 3)), (64, 64, (3, 3))]
    assert decoder.classifier.in_channels == 64 and decoder.classifier.out_channels == 3


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_label_map_is_argmax_with_its_tie_rule(memory_format):
    torch.manual_seed(0)
    logits = torch.randn(2, 21, 37, 53).contiguous(memory_format=memory_format)
    assert torch.equal(label_map(logits), logits.argmax(1))
    tied = torch.randint(0, 3, (2, 21, 37, 53)).float().contiguous(memory_format=memory_format)  # many ties
    assert torch.equal(label_map(tied), tied.argmax(1))
    assert label_map(torch.zeros(1, 5, 2, 2)).eq(0).all()  # all tied: the first class


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_upsample_logits_is_bilinear_resizing_in_channels_last_memory(memory_format):
    torch.manual_seed(0)
    logits = torch.randn(2, 81, 11, 7).contiguous(memory_format=memory_format)
    up = upsample_logits(logits, (176, 99))
    reference = F.interpolate(logits.contiguous(), size=(176, 99), mode="bilinear", align_corners=False)
    assert up.shape == reference.shape == (2, 81, 176, 99)
    assert up.is_contiguous(memory_format=torch.channels_last)
    # The NHWC kernel sums in another order: float rounding, nothing more.
    torch.testing.assert_close(up, reference, rtol=0, atol=2e-6)
    assert (label_map(up) != label_map(reference)).sum() <= 2  # a near-tie pixel may flip, no more
    # Gradients flow as through F.interpolate (training uses the same function).
    logits.requires_grad_(True)
    upsample_logits(logits, (22, 14)).sum().backward()
    torch.testing.assert_close(logits.grad, torch.full_like(logits, 4.0))
