"""SSDLite + DeepLabv3-lite on one trunk: the outputs are the single models' heads on the same backbone weights,
one backbone forward feeds both, the costs of models/joint.py's table, errors, and checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mobilenetv2_dense.backbone import mobilenet_v2
from mobilenetv2_dense.backbone.complexity import count_madds, count_parameters
from mobilenetv2_dense.heads.deeplab import DeepLabV3Head, DeepLabV3PlusDecoder, upsample_logits
from mobilenetv2_dense.heads.ssdlite import SSDLiteNorm
from mobilenetv2_dense.models import (
    SSDLite,
    SSDLiteDeepLabV3,
    ssdlite320_mobilenet_v2,
    ssdlite_deeplabv3_mobilenet_v2,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _calibrated(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """BN running statistics set from ``images`` (a fresh network in eval mode gives near-constant outputs, which
    would hide a head reading the wrong feature)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(images)
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("decoder", [None, "stage2", "stage3", "stage6_expansion"])
def test_heads_match_the_single_models_on_the_same_backbone_weights(decoder: str | None,
                                                                     images: torch.Tensor) -> None:
    torch.manual_seed(0)
    joint = _calibrated(ssdlite_deeplabv3_mobilenet_v2(num_classes=3, num_seg_classes=4, width_mult=0.35,
                                                       decoder=decoder is not None,
                                                       decoder_feature=decoder or "stage2"), images)
    state = joint.state_dict()
    with torch.no_grad():
        out = joint(images)

    # The detector: an SSDLite given the joint model's backbone and head weights computes the same three outputs.
    detector = ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.35).eval()
    detector.load_state_dict({k: v for k, v in state.items() if k.startswith(("backbone.", "head."))})
    with torch.no_grad():
        expected = detector(images)
    for key in ("bbox_regression", "cls_logits", "anchors"):
        torch.testing.assert_close(out[key], expected[key], rtol=0, atol=0, msg=key)

    # The segmenter: DeepLabv3's lite head (+ decoder) on stage7 (+ the decoder's feature) of the same backbone,
    # upsampled; stage6_expansion is the detector's own tap, read once.
    names = sorted({"stage7", decoder or "stage7"}, key=lambda name: name != decoder)
    backbone = mobilenet_v2(width_mult=0.35, out_features=names, norm_layer=SSDLiteNorm).eval()
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")
                              and k[len("backbone."):] in backbone.state_dict()})
    head = DeepLabV3Head(backbone.feature_info.channels("stage7"), None if decoder else 4, aspp=False).eval()
    head.load_state_dict({k.partition(".")[2]: v for k, v in state.items() if k.startswith("segmentation_head.")})
    with torch.no_grad():
        features = backbone(images)
        logits = head(features["stage7"])
        if decoder:
            refine = DeepLabV3PlusDecoder(backbone.feature_info.channels(decoder), num_classes=4).eval()
            refine.load_state_dict({k.partition(".")[2]: v for k, v in state.items()
                                    if k.startswith("segmentation_decoder.")})
            logits = refine(logits, features[decoder])
        expected_out = upsample_logits(logits, images.shape[-2:])  # as models/deeplab.py: F.interpolate, NHWC
    assert out["out"].shape == (2, 4, 96, 128)
    torch.testing.assert_close(out["out"], expected_out, rtol=0, atol=0)
    assert out["out"].std() > 0.01  # the comparison above is between informative outputs

    predicted = joint.predict(images)
    assert torch.equal(predicted["seg_labels"], out["out"].argmax(1))
    reference = detector.postprocess(expected, (96, 128))
    for ours, theirs in zip(predicted["detections"], reference):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(ours[key], theirs[key])


def test_one_backbone_forward_feeds_both_heads(images: torch.Tensor) -> None:
    model = ssdlite_deeplabv3_mobilenet_v2(num_classes=2, num_seg_classes=3, width_mult=0.35)
    assert isinstance(model, SSDLite)
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    out = model(images)
    assert len(calls) == 1
    # Each head's loss reaches the shared backbone, and only its own head.
    F.cross_entropy(out["out"], torch.zeros(2, 96, 128, dtype=torch.long)).backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0
    assert model.segmentation_head.classifier.weight.grad is not None
    assert all(p.grad is None for p in model.head.parameters())


def test_costs_of_the_module_table() -> None:
    """models/joint.py's table, COCO column (80 object classes, 81 segmentation classes, width 1, 320x320)."""
    lite = ssdlite_deeplabv3_mobilenet_v2(num_classes=80, num_seg_classes=81)
    decoder = ssdlite_deeplabv3_mobilenet_v2(num_classes=80, num_seg_classes=81, decoder=True)
    assert (count_parameters(lite), count_madds(lite, (320, 320))) == (4_654_278, 812_284_864)
    assert (count_parameters(decoder), count_madds(decoder, (320, 320))) == (4_806_070, 1_900_054_464)
    shared = ssdlite_deeplabv3_mobilenet_v2(num_classes=80, num_seg_classes=81, decoder=True,
                                            decoder_feature="stage6_expansion")  # the detector's stride-16 tap
    assert count_madds(shared, (320, 320)) < 0.5 * 1_812_000_000  # under half the two networks apart
    assert shared.backbone.out_features.count("stage6_expansion") == 1
    # The detector inside costs exactly SSDLite's (tests/models/test_detection_model.py: 4,337,013 parameters).
    detector_part = sum(count_parameters(m) for m in (lite.backbone, lite.head))
    assert detector_part == 4_337_013


def test_errors_name_the_fix() -> None:
    backbone = mobilenet_v2(width_mult=0.35, out_features=["stage6_expansion", "conv_head"])
    with pytest.raises(ValueError, match=r"out_features=\['stage6_expansion', 'conv_head', 'stage7'\]"):
        SSDLiteDeepLabV3(backbone, num_classes=2, num_seg_classes=3)
    with pytest.raises(ValueError, match="decoder_feature 'stage6' is at stride 32"):
        ssdlite_deeplabv3_mobilenet_v2(num_classes=2, num_seg_classes=3, width_mult=0.35, decoder=True,
                                       decoder_feature="stage6")
    with pytest.raises(ValueError, match="num_seg_classes counts the background"):
        ssdlite_deeplabv3_mobilenet_v2(num_classes=2, num_seg_classes=1, width_mult=0.35)


def test_weights_load_a_saved_state_dict(tmp_path: Path, images: torch.Tensor) -> None:
    torch.manual_seed(1)
    model = ssdlite_deeplabv3_mobilenet_v2(num_classes=2, num_seg_classes=3, width_mult=0.35, decoder=True).eval()
    torch.save(model.state_dict(), tmp_path / "joint.pth")
    loaded = ssdlite_deeplabv3_mobilenet_v2(num_classes=2, num_seg_classes=3, width_mult=0.35, decoder=True,
                                            weights=tmp_path / "joint.pth").eval()
    with torch.no_grad():
        assert torch.equal(model(images)["out"], loaded(images)["out"])
    with pytest.raises(ValueError, match="does not fit"):  # a lite-only model has no decoder keys
        ssdlite_deeplabv3_mobilenet_v2(num_classes=2, num_seg_classes=3, width_mult=0.35,
                                       weights=tmp_path / "joint.pth")
