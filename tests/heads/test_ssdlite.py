"""SSDLite head: output layout, parity with torchvision's SSDLite blocks, init, norm settings and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import ssdlite as tv_ssdlite

from mobilenetv2_dense.heads.anchors import num_anchors_per_location
from mobilenetv2_dense.heads.ssdlite import SSDLiteHead, SSDLiteNorm, _flatten_predictions

TAPS = {"stage6_expansion": 32, "conv_head": 48}  # small channels keep the test fast; layout is what matters
EXTRA = (64, 32, 32, 16)
NUM_ANCHORS = num_anchors_per_location(num_layers=6)


def make_head(num_classes: int = 4) -> SSDLiteHead:
    torch.manual_seed(0)
    return SSDLiteHead(in_channels=TAPS, num_classes=num_classes, num_anchors=NUM_ANCHORS, extra_channels=EXTRA)


def features(batch: int = 2, size: int = 320) -> dict[str, torch.Tensor]:
    s16, s32 = -(-size // 16), -(-size // 32)
    return {"stage6_expansion": torch.randn(batch, 32, s16, s16), "conv_head": torch.randn(batch, 48, s32, s32)}


@pytest.mark.parametrize(("size", "maps", "anchors"), [
    (320, [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], 2034),
    (300, [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], 1917),
])
def test_output_shapes(size, maps, anchors):
    out = make_head(num_classes=4)(features(batch=2, size=size))
    assert out["bbox_regression"].shape == (2, anchors, 4)
    assert out["cls_logits"].shape == (2, anchors, 5)
    assert out["feature_sizes"] == maps
    assert sum(h * w * a for (h, w), a in zip(maps, NUM_ANCHORS)) == anchors


def test_flatten_order_is_cell_then_anchor():
    # value = 1000*a + 100*v + 10*y + x at channel a*V + v: the flattened index must be (y*W + x)*A + a
    a_l, v, h, w = 3, 4, 2, 5
    a, vv, y, x = torch.meshgrid(*(torch.arange(n) for n in (a_l, v, h, w)), indexing="ij")
    grid = (1000 * a + 100 * vv + 10 * y + x).float().reshape(1, a_l * v, h, w)
    flat = _flatten_predictions([grid], v)
    assert flat.shape == (1, h * w * a_l, v)
    assert flat[0, (1 * w + 3) * a_l + 2].tolist() == [2000 + 100 * k + 13 for k in range(v)]


def test_matches_torchvision_ssdlite_blocks():
    head = make_head(num_classes=4).eval()
    feats = features(batch=2)
    maps = list(feats.values())
    for block in head.extra:
        maps.append(block(maps[-1]))
    # torchvision's extra blocks and prediction head, given our weights, must give the same numbers
    for i, ours in enumerate(head.extra):  # extra layer i maps maps[1 + i] to maps[2 + i]
        theirs = tv_ssdlite._extra_block(maps[1 + i].shape[1], EXTRA[i], SSDLiteNorm).eval()
        theirs.load_state_dict(ours.state_dict())
        torch.testing.assert_close(theirs(maps[1 + i]), maps[2 + i])
    tv_head = tv_ssdlite.SSDLiteHead([*TAPS.values(), *EXTRA], NUM_ANCHORS, 5, SSDLiteNorm).eval()
    state = {}
    for key, value in head.state_dict().items():
        key = key.replace("bbox_predictors.", "regression_head.module_list.")
        state[key.replace("cls_predictors.", "classification_head.module_list.")] = value
    tv_head.load_state_dict({k: v for k, v in state.items() if not k.startswith("extra.")})
    ours, theirs = head(feats), tv_head(maps)
    torch.testing.assert_close(ours["bbox_regression"], theirs["bbox_regression"])
    torch.testing.assert_close(ours["cls_logits"], theirs["cls_logits"])


def test_init_norm_and_class_prior():
    head = make_head(num_classes=4)
    norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.03 for m in norms)
    weights = torch.cat([p[-1].weight.flatten() for p in [*head.bbox_predictors, *head.cls_predictors]])
    assert 0.025 < weights.std().item() < 0.035
    assert all(p[-1].bias.abs().max() == 0 for p in head.cls_predictors)
    head.set_class_prior(0.01)
    head.eval()
    # zero features -> every predictor outputs its bias: object logits at sigmoid^-1(0.01), background at 0
    zeros = {k: torch.zeros_like(v) for k, v in features(batch=1).items()}
    logits = head(zeros)["cls_logits"]
    torch.testing.assert_close(logits[..., 1:].sigmoid(), torch.full_like(logits[..., 1:], 0.01))
    assert logits[..., 0].abs().max() == 0


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="num_anchors has 5 entries but there are 6 feature maps"):
        SSDLiteHead(in_channels=TAPS, num_classes=3, num_anchors=[6] * 5)
    with pytest.raises(KeyError, match="out_features"):
        make_head()({"conv_head": torch.zeros(1, 48, 10, 10)})
