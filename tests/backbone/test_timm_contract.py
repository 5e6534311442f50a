"""``feature_info`` keeps timm's contract: the calls timm users make give what timm gives.

Two references: timm's own ``FeatureInfo`` class fed this backbone's entries (same semantics, call for call), and
``timm.create_model("mobilenetv2_100", features_only=True)`` (same numbers for the same levels). Nothing
downloads (``pretrained=False``).
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.models import FeatureInfo as TimmFeatureInfo

from mobilenetv2_dense.backbone import FeatureInfo, mobilenet_v2

# timm's mobilenetv2_100 levels 0..4 (strides 2..32) are this backbone's DEFAULT_OUT_FEATURES.
TIMM_LEVELS = ("stage1", "stage2", "stage3", "stage5", "stage7")
CONFIGS = [
    dict(out_features=["stage2", "stage3", "stage5", "stage7"]),
    dict(out_features=["stage6_expansion", "conv_head"]),  # SSDLite's taps
    dict(out_features=["stage2", "stage7"], output_stride=16),  # DeepLabv3+
    dict(out_features=["stem", "stage7", "logits"], num_classes=10, width_mult=0.5),
]


def _timm_twin(info: FeatureInfo) -> TimmFeatureInfo:
    return TimmFeatureInfo(copy.deepcopy(info.info), info.out_indices)


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: "+".join(k["out_features"]))
def test_every_accessor_behaves_as_timms_class(kwargs: dict) -> None:
    """The same entries and out_indices in timm's FeatureInfo answer every call exactly as ours does."""
    ours = mobilenet_v2(**kwargs).feature_info
    theirs = _timm_twin(ours)
    everything = list(range(len(ours)))
    for call in ("channels", "reduction", "module_name"):
        assert getattr(ours, call)() == getattr(theirs, call)(), call
        assert getattr(ours, call)(everything) == getattr(theirs, call)(everything), call
        assert getattr(ours, call)((0, -1)) == getattr(theirs, call)((0, -1)), call
        for i in [*everything, -1]:
            assert getattr(ours, call)(i) == getattr(theirs, call)(i), (call, i)
    for keys in (None, ["num_chs", "reduction"], ["module"]):
        assert ours.get_dicts(keys=keys) == theirs.get_dicts(keys=keys)
        assert ours.get_dicts(keys=keys, idx=1) == theirs.get_dicts(keys=keys, idx=1)
        assert ours.get_dicts(keys=keys, idx=[0, 2]) == theirs.get_dicts(keys=keys, idx=[0, 2])
    assert ours.get("num_chs") == theirs.get("num_chs") and ours.get("stage", 2) == theirs.get("stage", 2)
    assert len(ours) == len(theirs) and list(ours) == list(theirs.info) and ours[-1] == theirs[-1]
    assert [ours[i] for i in ours.out_indices] == [theirs[i] for i in theirs.out_indices]
    assert ours.from_other(2).channels() == theirs.from_other(2).channels()


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: "+".join(k["out_features"]))
def test_out_indices_describe_what_forward_returns(kwargs: dict) -> None:
    model = mobilenet_v2(**kwargs).eval()
    info = model.feature_info
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == info.out_names == [info[i]["name"] for i in info.out_indices]
    assert [t.shape[1] for t in out.values()] == info.channels()
    # out_feature_info: the returned features alone, so every index counts returned features
    selected = model.out_feature_info
    assert len(selected) == len(out) and selected.channels() == info.channels()
    assert [selected.channels(i) for i in range(len(out))] == info.channels()
    assert [f["reduction"] for f in selected] == info.reduction()


def test_the_calls_timm_users_make_match_timms_mobilenetv2() -> None:
    """timm's mobilenetv2_100 with out_indices (1, 2, 3, 4) and this backbone asked for the same four levels."""
    theirs = timm.create_model("mobilenetv2_100", features_only=True, pretrained=False, out_indices=(1, 2, 3, 4))
    ours = mobilenet_v2(out_features=list(TIMM_LEVELS[1:]))
    a, b = ours.feature_info, theirs.feature_info
    assert a.channels() == b.channels() == [24, 32, 96, 320]
    assert a.reduction() == b.reduction() == [4, 8, 16, 32]
    assert a.get_dicts(keys=["num_chs", "reduction"]) == b.get_dicts(keys=["num_chs", "reduction"])
    assert a.get("stage") == b.get("stage") == [2, 3, 5, 7]  # both number the stages of the paper's Table 2
    assert a.get_dicts(keys=["num_chs", "reduction", "stage"]) == b.get_dicts(keys=["num_chs", "reduction", "stage"])
    # An explicit index addresses every feature, returned or not, in both; via out_indices it is the same level.
    assert [a.channels(i) for i in a.out_indices] == [b.channels(i) for i in b.out_indices]
    assert [a[i]["reduction"] for i in a.out_indices] == [b[i]["reduction"] for i in b.out_indices]
    assert a.channels(TIMM_LEVELS[0]) == b.channels(0) == 16  # the level neither returns
    assert len(a) >= len(b) and [f["name"] for f in a if f["name"] in TIMM_LEVELS] == list(TIMM_LEVELS)
    assert a[-1]["reduction"] == b[-1]["reduction"] == 32
    # The outputs themselves: timm returns a list, this backbone a dict in the same order.
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        assert [t.shape for t in ours.eval()(x).values()] == [t.shape for t in theirs.eval()(x)]


def test_names_stand_for_indices_and_unknown_names_list_the_known() -> None:
    info = mobilenet_v2(out_features=["stage6_expansion", "conv_head"]).feature_info
    assert info["stage6_expansion"] == info[info.names.index("stage6_expansion")]
    assert info.channels(["stage6_expansion", "conv_head"]) == info.channels() == [576, 1280]
    assert info.get("stage6_expansion")["num_chs"] == 576  # the legacy get(name)
    with pytest.raises(KeyError, match="unknown feature 'stage9'; available features: stem, stage1"):
        info.channels("stage9")
    with pytest.raises(IndexError, match="feature index 40 is out of range"):
        FeatureInfo(info, out_indices=[40])
