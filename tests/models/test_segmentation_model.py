"""DeepLabV3 network: output sizes, dilation at OS8/OS16, output-stride switching, paper Table 7 counts."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from mobilenetv2_dense.backbone.complexity import count_madds, count_parameters
from mobilenetv2_dense.models.deeplab import DeepLabV3, deeplabv3_mobilenet_v2

# (stride, dilation) of every depthwise conv of stages 4..7 (4, 3, 3 and 1 blocks), worked out by hand from
# TF DeepLab's rule: the block that would take the stride past the output stride keeps the current rate,
# the blocks after it multiply the rate by that stride.
GEOMETRY = {
    16: [[(2, 1), (1, 1), (1, 1), (1, 1)], [(1, 1)] * 3, [(1, 1), (1, 2), (1, 2)], [(1, 2)]],
    8: [[(1, 1), (1, 2), (1, 2), (1, 2)], [(1, 2)] * 3, [(1, 2), (1, 4), (1, 4)], [(1, 4)]],
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _depthwise_geometry(model: DeepLabV3) -> list[list[tuple[int, int]]]:
    return [[(b.depthwise[0].stride[0], b.depthwise[0].dilation[0]) for b in stage]
            for stage in model.backbone.stages[3:]]


def _calibrate(model: DeepLabV3, x: torch.Tensor) -> DeepLabV3:
    """Set every BN's running statistics to those of ``x``: a fresh network in eval mode saturates its ReLU6s
    (identity statistics after Kaiming init) and gives spatially constant logits, which would hide bugs."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(x)
    return model.eval()


@pytest.mark.parametrize("head, decoder, output_stride",
                         [("lite", False, 16), ("aspp", False, 16), ("lite", True, 16), ("aspp", True, 8),
                          ("lite", False, 8)])
def test_output_is_input_size(head: str, decoder: bool, output_stride: int) -> None:
    model = deeplabv3_mobilenet_v2(num_classes=5, head=head, decoder=decoder, output_stride=output_stride).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 97, 75))["out"].shape == (2, 5, 97, 75)


def test_voc_sized_input_is_not_padded_or_cropped() -> None:
    model = deeplabv3_mobilenet_v2(num_classes=21, decoder=True).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 375, 500))["out"].shape == (1, 21, 375, 500)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_backbone_and_aspp_dilation(output_stride: int) -> None:
    model = deeplabv3_mobilenet_v2(head="aspp", output_stride=output_stride, decoder=True)
    assert _depthwise_geometry(model) == GEOMETRY[output_stride]
    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
    assert [b[0].dilation for b in model.head.branches[1:]] == [(r, r) for r in rates]
    assert model.backbone.out_feature_info.reduction() == [4, output_stride]  # stage2, stage7
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 96, 80))
    assert features["stage7"].shape[-2:] == (math.ceil(96 / output_stride), math.ceil(80 / output_stride))
    assert features["stage2"].shape[-2:] == (24, 20)  # the decoder's feature stays at stride 4


def test_set_output_stride_matches_a_model_built_at_that_stride() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 72, 56)
    built8 = _calibrate(deeplabv3_mobilenet_v2(num_classes=4, head="aspp", output_stride=8), x)
    switched = deeplabv3_mobilenet_v2(num_classes=4, head="aspp", output_stride=16).eval()
    switched.load_state_dict(built8.state_dict())
    with torch.no_grad():
        at16 = switched(x)["out"]
        switched.set_output_stride(8)
        assert switched.output_stride == 8 and switched.head.atrous_rates == (12, 24, 36)
        assert _depthwise_geometry(switched) == GEOMETRY[8]
        torch.testing.assert_close(switched(x)["out"], built8(x)["out"], rtol=0, atol=0)
        assert not torch.allclose(at16, built8(x)["out"], atol=1e-3)  # the switch really changed the network
        assert at16.std(dim=(2, 3)).min() > 1e-3  # spatially varying logits, so the comparison means something
        switched.set_output_stride(16)
        torch.testing.assert_close(switched(x)["out"], at16, rtol=0, atol=0)


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="output_stride must be 8 or 16, got 32"):
        deeplabv3_mobilenet_v2(output_stride=32)
    with pytest.raises(ValueError, match="head must be 'lite' or 'aspp'"):
        deeplabv3_mobilenet_v2(head="psp")
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        deeplabv3_mobilenet_v2().set_output_stride(32)


def test_training_at_batch_one() -> None:
    model = deeplabv3_mobilenet_v2(num_classes=3, head="aspp", decoder=True).train()
    out = model(torch.randn(1, 3, 65, 65))["out"]
    assert out.shape == (1, 3, 65, 65)
    torch.nn.functional.cross_entropy(out, torch.randint(0, 3, (1, 65, 65))).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_backbone_weights_and_freezing(tmp_path) -> None:
    reference = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), path)
    model = deeplabv3_mobilenet_v2(backbone_weights=str(path), frozen_stages=2)
    torch.testing.assert_close(model.backbone.stem[0].weight, reference.features[0][0].weight)
    torch.testing.assert_close(model.backbone.stages[6][0].project[0].weight, reference.features[17].conv[2].weight)
    assert not any(p.requires_grad for p in model.backbone.stages[1].parameters())
    assert all(p.requires_grad for p in model.backbone.stages[2].parameters())


def printed(value: float, figure: str, *, units: float = 0.5) -> bool:
    """``value`` agrees with a paper figure printed as ``figure`` ("4.3", "0.35"): within ``units`` of its last
    printed digit (0.5: it rounds to the figure)."""
    decimals = len(figure.partition(".")[2])
    return abs(value - float(figure)) <= units * 10.0 ** -decimals + 1e-12


# ------------------------------------------------------------------ paper Table 7 (21 classes, OS16, width 1)


@pytest.mark.parametrize("head, params, paper", [("lite", 2_113_557, "2.11"), ("aspp", 4_523_541, "4.52")])
def test_parameters_match_paper(head: str, params: int, paper: str) -> None:
    count = count_parameters(deeplabv3_mobilenet_v2(num_classes=21, head=head))
    assert count == params  # models/deeplab.py's table
    assert printed(count / 1e6, paper)  # Table 7, to the printed digit


@pytest.mark.parametrize("head, madds_513, madds_512", [("lite", 2_740_709_056, 2_603_958_272),
                                                        ("aspp", 5_363_508_928, 5_070_209_024)])
def test_madds_at_tf_crop_size_and_at_512(head: str, madds_513: int, madds_512: int) -> None:
    """Exact counts at TF DeepLab's 513x513 crop (the size the paper's numbers come from, see
    models/deeplab.py) and at 512x512."""
    model = deeplabv3_mobilenet_v2(num_classes=21, head=head)
    assert count_madds(model, (513, 513)) == madds_513
    assert count_madds(model, (512, 512)) == madds_512
    if head == "lite":  # Table 7 prints 2.75B: 2.741B is one unit of the last digit below (-0.3%)
        assert printed(madds_513 / 1e9, "2.75", units=1)
    # the ASPP head's 5.8B needs TF's space_to_batch padding: test_aspp_madds_with_tf_space_to_batch_padding


def test_aspp_madds_with_tf_space_to_batch_padding() -> None:
    """TF runs a rate-r 3x3 conv on a map padded to a multiple of r (space_to_batch); adding those positions
    to our count at 513 must give the paper's 5.8B. This pins down why 512x512 alone falls 12.6% short."""
    model = deeplabv3_mobilenet_v2(num_classes=21, head="aspp")
    side = math.ceil(513 / 16)  # 33: the stage7 map
    extra = 0
    for branch in model.head.branches[1:]:
        conv = branch[0]
        rate = conv.dilation[0]
        padded = math.ceil((side + 2 * rate) / rate) * rate - 2 * rate  # 36 at rates 6, 12 and 18
        extra += conv.in_channels * conv.out_channels * 9 * (padded**2 - side**2)
    assert extra == 457_850_880
    assert count_madds(model, (513, 513)) + extra == 5_821_359_808
    assert printed((5_363_508_928 + extra) / 1e9, "5.8")  # Table 7, to the printed digit


def test_lite_os8_multi_scale_flip_madds() -> None:
    """Table 7's OS8 + MF lite row: six scales 0.5..1.75 and their flips cost sum(s^2) x 2 single passes."""
    scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    single = count_madds(deeplabv3_mobilenet_v2(num_classes=21, head="lite", output_stride=8), (513, 513))
    assert single == 8_825_853_632
    total = single * sum(s * s for s in scales) * 2  # x 17.375
    assert total == pytest.approx(153_349_206_856, abs=1)
    assert printed(total / 1e9, "152.6", units=8)  # 153.3B: 0.5% above the paper's 152.6B
