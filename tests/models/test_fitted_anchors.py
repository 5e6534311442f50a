"""SSDLite's anchor settings: map sizes known without a forward pass, fitted values set on a built model (same head
shapes, new anchors), and counts that would not fit the head refused."""

from __future__ import annotations

import pytest
import torch

from mobilenetv2_dense.heads.anchors import AnchorSettings, ssd_anchors
from mobilenetv2_dense.models.joint import ssdlite_deeplabv3_mobilenet_v2
from mobilenetv2_dense.models.ssdlite import ssdlite320_mobilenet_v2

pytestmark = pytest.mark.usefixtures("one_thread")

FITTED = AnchorSettings(aspect_ratios=(6.0, 0.15, 4.0, 0.25, 1.0), interpolated_scale_aspect_ratio=8.0,
                        scales=(0.1, 0.25, 0.2, 0.3, 0.5, 0.4),
                        lowest_layer_boxes=((0.2, 6.0), (0.15, 0.15), (0.25, 0.2)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.35).eval()


@pytest.mark.parametrize("size", [(192, 192), (97, 131), (64, 200)])
@pytest.mark.parametrize("joint", [False, True], ids=["ssdlite", "joint"])
def test_feature_sizes_equal_the_forward_pass(model, size, joint):
    # The joint backbone also returns stage7 (and stage2 with the decoder): only the taps are the head's maps.
    net = ssdlite_deeplabv3_mobilenet_v2(num_classes=3, num_seg_classes=4, width_mult=0.35,
                                         decoder=True).eval() if joint else model
    with torch.no_grad():
        assert net.head(net.backbone(torch.zeros(1, 3, *size)))["feature_sizes"] == net.feature_sizes(size)


def test_fitted_settings_change_the_anchors_not_the_head(model):
    built = ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.35, anchors=FITTED).eval()
    assert built.head.num_anchors == model.head.num_anchors == [3, 6, 6, 6, 6, 6]
    built.load_state_dict(model.state_dict())  # trained weights of the default model still fit
    with torch.no_grad():
        out = built(torch.zeros(1, 3, 96, 96))
    expected = ssd_anchors(built.feature_sizes((96, 96)), (96, 96), built.anchor_settings)
    torch.testing.assert_close(out["anchors"], expected)
    assert not torch.allclose(out["anchors"], model(torch.zeros(1, 3, 96, 96))["anchors"])

    model.set_anchor_settings(FITTED)  # the same values set after construction, cached anchors dropped
    with torch.no_grad():
        torch.testing.assert_close(model(torch.zeros(1, 3, 96, 96))["anchors"], expected)
    with pytest.raises(ValueError, match=r"give \[3, 5, 5, 5, 5, 5\] anchors per location"):
        model.set_anchor_settings(model.anchor_settings.replace(aspect_ratios=(1.0, 2.0, 0.5, 3.0)))
    with pytest.raises(ValueError, match="unknown anchor settings"):
        model.set_anchor_settings(model.anchor_settings.replace(ratios=(1.0,)))
