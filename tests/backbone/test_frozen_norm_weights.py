"""torchvision's mobilenet_v2 weights load into torchvision's FrozenBatchNorm2d, the norm layer its detectors use."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from mobilenetv2_dense.backbone import convert_torchvision_state_dict, mobilenet_v2

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, str]:
    """A torchvision mobilenet_v2 (width 0.5) with every parameter and statistic random, and its state_dict file."""
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None, width_mult=0.5).eval()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(1.0, 2.0)
                m.num_batches_tracked.fill_(123)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_050.pth"
    torch.save(reference.state_dict(), path)
    return reference, str(path)


def test_torchvision_weights_load_into_frozen_batch_norm_tensor_by_tensor(torchvision_file) -> None:
    reference, path = torchvision_file
    model = mobilenet_v2(width_mult=0.5, norm_layer=FrozenBatchNorm2d, num_classes=1000, weights=path).eval()
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) == 52  # every norm layer of the net
    converted, foreign = convert_torchvision_state_dict(reference.state_dict())
    expected = {k: v for k, v in converted.items() if not k.endswith("num_batches_tracked")}
    ours = model.state_dict()
    assert not foreign and set(ours) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["logits"], reference(x))  # frozen norm = batch norm in eval


def test_frozen_batch_norm_weights_load_back_into_batch_norm(torchvision_file, tmp_path) -> None:
    """The other way: a file without batch counters (saved from the frozen norm) loads into BatchNorm2d."""
    _, path = torchvision_file
    frozen = mobilenet_v2(width_mult=0.5, norm_layer=FrozenBatchNorm2d, out_features=["stage7"], weights=path)
    saved = tmp_path / "frozen.pth"
    torch.save(frozen.state_dict(), saved)
    assert not any(key.endswith("num_batches_tracked") for key in torch.load(saved))
    model = mobilenet_v2(width_mult=0.5, out_features=["stage7"], weights=saved)
    ours = model.state_dict()
    for key, value in frozen.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)


def test_foreign_keys_are_still_refused_with_frozen_batch_norm(torchvision_file, tmp_path) -> None:
    reference, _ = torchvision_file
    path = tmp_path / "extra.pth"
    torch.save({**reference.state_dict(), "neck.0.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"1 unexpected keys \['neck\.0\.weight'\]"):
        mobilenet_v2(width_mult=0.5, norm_layer=FrozenBatchNorm2d, weights=path)
