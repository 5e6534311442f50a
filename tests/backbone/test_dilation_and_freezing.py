"""Output stride by dilation, in-place stride switching, stage freezing and frozen BatchNorm."""

import pytest
import torch
from torch import nn

from mobilenetv2_dense.backbone import mobilenet_v2


def _depthwise(model):
    return [[block.depthwise[0] for block in stage] for stage in model.stages]


@pytest.mark.parametrize("output_stride, expected_rates", [
    # (stride, dilation) of the depthwise conv of every block in stages 4..7 (TF DeepLab's rule)
    (32, [[(2, 1), (1, 1), (1, 1), (1, 1)], [(1, 1)] * 3, [(2, 1), (1, 1), (1, 1)], [(1, 1)]]),
    (16, [[(2, 1), (1, 1), (1, 1), (1, 1)], [(1, 1)] * 3, [(1, 1), (1, 2), (1, 2)], [(1, 2)]]),
    (8, [[(1, 1), (1, 2), (1, 2), (1, 2)], [(1, 2)] * 3, [(1, 2), (1, 4), (1, 4)], [(1, 4)]]),
])
def test_dilation_replaces_stride(output_stride, expected_rates):
    model = mobilenet_v2(output_stride=output_stride)
    got = [[(c.stride[0], c.dilation[0]) for c in stage] for stage in _depthwise(model)[3:]]
    assert got == expected_rates
    for stage in _depthwise(model):
        for conv in stage:
            assert conv.padding[0] == conv.dilation[0], "3x3 'same' padding must grow with the rate"
    out = model(torch.randn(1, 3, 128, 128))
    assert out["stage7"].shape[-1] == 128 // output_stride
    assert model.out_feature_info.get("stage7")["reduction"] == output_stride


def test_set_output_stride_equals_building_at_that_stride():
    built = mobilenet_v2(output_stride=8, out_features=["stage5", "stage7"]).eval()
    switched = mobilenet_v2(output_stride=16, out_features=["stage5", "stage7"]).eval()
    switched.load_state_dict(built.state_dict())
    switched.set_output_stride(8)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a, b = built(x), switched(x)
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    assert switched.out_feature_info.reduction() == [8, 8]
    switched.set_output_stride(16)
    assert switched(x)["stage7"].shape[-1] == 96 // 16


def test_frozen_stages_stop_gradients_and_keep_bn_statistics():
    model = mobilenet_v2(frozen_stages=2, out_features=["stage3"])
    model.train()
    frozen = [model.stem, model.stages[0], model.stages[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.stages[2].parameters())
    assert all(not m.training for m in frozen)
    before = model.stem[1].running_mean.clone()
    model(torch.randn(2, 3, 64, 64))["stage3"].sum().backward()
    torch.testing.assert_close(model.stem[1].running_mean, before)
    assert model.stages[2][0].expand[0].weight.grad is not None


def test_norm_eval_freezes_every_batchnorm():
    model = mobilenet_v2(norm_eval=True, out_features=["stage2"]).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert model.training


@pytest.mark.parametrize("kwargs", [dict(norm_eval=True), dict(frozen_stages=2)], ids=["norm_eval", "frozen_stages"])
def test_frozen_statistics_hold_without_a_train_call(kwargs):
    """Built, then stepped in whatever mode it was left in (Lightning >= 2.2 never calls train() at fit start),
    or with a child switched back to train mode by hand: the frozen running statistics must not move."""
    model = mobilenet_v2(out_features=["stage3"], **kwargs)
    frozen = [model] if "norm_eval" in kwargs else [model.stem, model.stages[0], model.stages[1]]
    stats = lambda: [b.clone() for m in frozen for n, b in m.named_buffers() if n.endswith("running_mean")]  # noqa: E731
    before = stats()
    model(torch.randn(2, 3, 64, 64))
    model.stem.train()  # e.g. a caller's own mode switching
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(a, b) for a, b in zip(before, stats()))
    if "frozen_stages" in kwargs:  # the rest keeps learning its statistics
        assert model.stages[2][0].expand[1].running_mean.abs().sum() > 0  # starts at zeros


def test_init_options_set_the_conv_weight_scale():
    """``init="normal"`` is the detectors' N(0, 0.03) (TF SSDLite, torchvision ssdlite320 from scratch); the default
    stays torchvision's classification init (He normal, fan out: std sqrt(2 / (C_out * 9)) for a 3x3 depthwise)."""
    torch.manual_seed(0)
    normal = mobilenet_v2(init="normal", out_features=["stage7"])
    kaiming = mobilenet_v2(out_features=["stage7"])
    convs = [m for m in normal.modules() if isinstance(m, nn.Conv2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.03) < 1e-3 and abs(weights.mean().item()) < 1e-3
    depthwise = kaiming.stages[1][0].depthwise[0].weight  # (96, 1, 3, 3)
    assert abs(depthwise.std().item() - (2 / (depthwise.shape[0] * 9)) ** 0.5) < 0.005
    for model in (normal, kaiming):
        norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)
    with pytest.raises(ValueError, match="init must be 'kaiming' or 'normal'"):
        mobilenet_v2(init="xavier")
