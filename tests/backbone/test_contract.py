"""The feature contract (timm's contract test), over widths and output strides."""

import math

import pytest
import torch

from mobilenetv2_dense.backbone import MobileNetV2, mobilenet_v2
from mobilenetv2_dense.backbone.features import FeatureInfo

WIDTHS = [0.35, 0.5, 0.75, 1.0, 1.4]
ALL_FEATURES = MobileNetV2(width_mult=1.0).feature_info.names


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("width_mult", WIDTHS)
def test_every_feature_matches_feature_info(width_mult, output_stride):
    model = mobilenet_v2(width_mult=width_mult, output_stride=output_stride, out_features=ALL_FEATURES).eval()
    info = model.out_feature_info
    x = torch.randn(2, 3, 67, 93)  # odd sizes: the ceil rule must hold
    with torch.no_grad():
        out = model(x)
    assert list(out) == info.names == ALL_FEATURES
    for name, tensor in out.items():
        entry = info.get(name)
        assert tensor.shape[:2] == (2, entry["num_chs"]), name
        assert tensor.shape[2] <= math.ceil(67 / entry["reduction"]) + 1, name
        assert tensor.shape[3] <= math.ceil(93 / entry["reduction"]) + 1, name
        assert torch.isfinite(tensor).all(), name
    reductions = info.reduction()
    assert reductions == sorted(reductions), "features must come ordered by stride"
    assert max(reductions) == output_stride


def test_feature_info_is_known_without_forward_and_has_timm_keys():
    model = mobilenet_v2(out_features=["stage6_expansion", "conv_head"])
    assert isinstance(model.feature_info, FeatureInfo)
    for entry in model.feature_info:
        assert {"num_chs", "reduction", "module"} <= set(entry)
        assert model.get_submodule(entry["module"]) is not None or entry["module"] not in dict(model.named_modules())
    tap = model.feature_info.get("stage6_expansion")
    # The paper's SSDLite tap: expansion of the first 160-channel block, 576 channels at stride 16.
    assert (tap["num_chs"], tap["reduction"], tap["location"]) == (576, 16, "expansion")
    assert model.out_feature_info.channels() == [576, 1280]
    assert model.out_feature_info.reduction() == [16, 32]
    # timm-style consumers iterate dicts
    assert [f["num_chs"] for f in model.out_feature_info] == [576, 1280]


def test_module_paths_point_at_the_tapped_modules():
    model = mobilenet_v2(out_features=ALL_FEATURES)
    modules = dict(model.named_modules())
    for entry in model.feature_info:
        assert entry["module"] in modules, entry


def test_default_out_features_are_timm_levels():
    model = mobilenet_v2()
    assert model.out_feature_info.reduction() == [2, 4, 8, 16, 32]
    assert model.out_feature_info.channels() == [16, 24, 32, 96, 320]
    assert model.conv_head is None, "layers past the last requested feature must not be built"


def test_classifier_is_optional_and_logits_is_a_feature():
    model = mobilenet_v2(num_classes=10, out_features=["stage7", "logits"]).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert out["logits"].shape == (1, 10)
    assert mobilenet_v2().classifier is None


def test_truncated_model_matches_full_model_features():
    full = mobilenet_v2(out_features=ALL_FEATURES).eval()
    short = mobilenet_v2(out_features=["stage3"]).eval()
    short.load_state_dict({k: v for k, v in full.state_dict().items() if k in short.state_dict()})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(short(x)["stage3"], full(x)["stage3"])


@pytest.mark.parametrize("bad, message", [
    (dict(out_features=["stage9"]), "unknown feature 'stage9'"),
    (dict(out_features=["logits"]), "set num_classes"),
    (dict(output_stride=4), "output_stride must be one of"),
    (dict(width_mult=0), "width_mult must be positive"),
    (dict(out_features="stage1"), "list of names"),
])
def test_bad_configuration_names_problem_and_fix(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        mobilenet_v2(**bad)
