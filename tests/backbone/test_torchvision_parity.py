"""Architecture and weights parity with torchvision's mobilenet_v2 at the paper's widths."""

import pytest
import torch
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

from mobilenetv2_dense.backbone import mobilenet_v2
from mobilenetv2_dense.backbone.complexity import count_madds, count_parameters

WIDTHS = [0.35, 0.5, 0.75, 1.0, 1.4]
# Stage ends in torchvision's `features` Sequential: the index of the last block of each stage.
TV_STAGE_END = {"stem": 0, "stage1": 1, "stage2": 3, "stage3": 6, "stage4": 10, "stage5": 13, "stage6": 16,
                "stage7": 17, "conv_head": 18}


@pytest.mark.parametrize("width_mult", WIDTHS)
def test_parameter_count_equals_torchvision(width_mult):
    ours = mobilenet_v2(width_mult=width_mult, num_classes=1000)
    assert count_parameters(ours) == count_parameters(tv_mobilenet_v2(width_mult=width_mult))


def test_paper_counts_at_width_one():
    model = mobilenet_v2(num_classes=1000)
    assert count_parameters(model) == 3_504_872  # torchvision's figure; the paper rounds to 3.4M
    madds = count_madds(model, (224, 224))
    assert madds == 300_774_272  # torchvision's 0.301 GMAdds
    assert abs(madds / 1e6 - 300) <= 1  # paper Table 4 prints 300M: within one unit of its last digit


@pytest.mark.parametrize("width_mult", WIDTHS)
def test_torchvision_weights_load_and_every_feature_matches(width_mult, tmp_path):
    torch.manual_seed(0)
    reference = tv_mobilenet_v2(width_mult=width_mult).eval()
    # Random BN statistics, so a mis-mapped running mean/var would show.
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "tv.pth"
    torch.save(reference.state_dict(), path)
    names = list(TV_STAGE_END) + ["logits"]
    ours = mobilenet_v2(width_mult=width_mult, num_classes=1000, out_features=names, weights=path).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        out = ours(x)
        expected, h = {}, x
        for index, layer in enumerate(reference.features):
            h = layer(h)
            for name, end in TV_STAGE_END.items():
                if end == index:
                    expected[name] = h
        expected["logits"] = reference(x)
    for name in names:
        torch.testing.assert_close(out[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


def test_expansion_tap_equals_torchvision_expansion_output(tmp_path):
    reference = tv_mobilenet_v2().eval()
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    ours = mobilenet_v2(out_features=["stage6_expansion"], weights=tmp_path / "tv.pth").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        # features[14] is the first 160-channel block; conv[0] its 1x1 expansion ("layer 15" of the paper).
        expected = reference.features[14].conv[0](reference.features[:14](x))
        torch.testing.assert_close(ours(x)["stage6_expansion"], expected, atol=1e-5, rtol=1e-5)
