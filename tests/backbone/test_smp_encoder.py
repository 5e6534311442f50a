"""The ``mnv2_dense`` segmentation-models-pytorch encoder: registry, feature contract, smp models, weights."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision
from segmentation_models_pytorch.encoders import get_encoder

from mobilenetv2_dense.backbone import mobilenet_v2
from mobilenetv2_dense.backbone.smp_encoder import (
    SMP_ENCODER_WIDTHS,
    MobileNetV2Encoder,
    register_smp_encoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(autouse=True, scope="module")
def _registered():
    register_smp_encoder()


def _depthwise_geometry(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(b.depthwise[0].stride[0], b.depthwise[0].dilation[0]) for stage in model.stages for b in stage]


def test_registration_is_idempotent() -> None:
    before = {name: dict(smp.encoders.encoders[name]) for name in SMP_ENCODER_WIDTHS}
    register_smp_encoder()
    assert {name: smp.encoders.encoders[name] for name in SMP_ENCODER_WIDTHS} == before
    assert set(SMP_ENCODER_WIDTHS) <= set(smp.encoders.get_encoder_names())
    assert smp.encoders.encoders["mnv2_dense"]["pretrained_settings"] == {}  # nothing to download


def test_importing_the_package_registers_nothing() -> None:
    """Registration is an explicit call: importing every sub-package (in a fresh interpreter, so this module's
    fixture has not run) leaves smp's registry as it was, and register_smp_encoder() then adds the names."""
    root = Path(__file__).resolve().parents[2]
    code = (
        "import segmentation_models_pytorch as smp\n"
        "import mobilenetv2_dense.tasks.segmentation, mobilenetv2_dense.backbone.smp_encoder as enc\n"
        "import mobilenetv2_dense.tasks.detection, mobilenetv2_dense.commands.cli\n"
        "names = set(enc.SMP_ENCODER_WIDTHS)\n"
        "assert not names & set(smp.encoders.encoders), sorted(names & set(smp.encoders.encoders))\n"
        "enc.register_smp_encoder()\n"
        "assert names <= set(smp.encoders.get_encoder_names())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("depth, output_stride", [(5, 32), (5, 16), (5, 8), (3, 32), (4, 8)])
def test_feature_contract(depth: int, output_stride: int) -> None:
    """smp's contract: depth + 1 tensors, the input first, channels = out_channels, strides 1, 2, 4, ... capped."""
    encoder = get_encoder("mnv2_dense", depth=depth, output_stride=output_stride).eval()
    assert isinstance(encoder, MobileNetV2Encoder)
    assert encoder.output_stride == min(output_stride, 2**depth)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        features = encoder(x)
    assert len(features) == depth + 1 and features[0] is x
    assert [f.shape[1] for f in features] == encoder.out_channels == [3, 16, 24, 32, 96, 320][: depth + 1]
    for level, f in enumerate(features):
        stride = min(2**level, output_stride)
        assert f.shape[-2:] == (math.ceil(96 / stride), math.ceil(64 / stride))


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilation_is_tf_deeplab_rule(output_stride: int) -> None:
    """make_dilated goes through set_output_stride: same geometry as our backbone, not smp's stride patching."""
    encoder = get_encoder("mnv2_dense", output_stride=output_stride)
    backbone = mobilenet_v2(output_stride=output_stride, out_features=["stage7"])
    assert _depthwise_geometry(encoder) == _depthwise_geometry(backbone)
    assert encoder.stem[0].stride == (2, 2)  # smp's generic patching would never touch the stem; neither do we
    # smp patches every conv of the dilated stages, 1x1s included; only depthwise 3x3s may dilate here.
    assert all(m.dilation == (1, 1) for m in encoder.modules()
               if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1))


def test_features_equal_torchvision_with_its_weights(tmp_path) -> None:
    """Build with encoder_weights=None, then load a local torchvision state_dict: features match torchvision."""
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    for m in reference.modules():  # non-identity BN statistics, so the comparison is not degenerate
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(1.0, 2.0)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), path)
    model = smp.Unet(encoder_name="mnv2_dense", encoder_weights=None, classes=2)
    model.encoder.load_weights(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.encoder.eval()(x)
        expected = [reference.features[:i](x) for i in (2, 4, 7, 14, 18)]  # stage1, 2, 3, 5, 7 in torchvision
    for ours, theirs in zip(features[1:], expected):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("make, kwargs", [
    (smp.DeepLabV3Plus, {"encoder_output_stride": 16}),
    (smp.DeepLabV3Plus, {"encoder_output_stride": 8}),
    (smp.Unet, {}),
])
def test_smp_models_forward_backward(make, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = make(encoder_name="mnv2_dense", encoder_weights=None, classes=3, **kwargs).train()
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert out.shape == (2, 3, 64, 96)
    torch.nn.functional.cross_entropy(out, torch.randint(0, 3, (2, 64, 96))).backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_smp_input_shape_check_uses_our_output_stride() -> None:
    """smp's DeepLabV3Plus checks divisibility by encoder.output_stride: 16 rejects 72x64, 8 accepts it."""
    at16 = smp.DeepLabV3Plus(encoder_name="mnv2_dense", encoder_weights=None, classes=2, encoder_output_stride=16)
    with pytest.raises(RuntimeError, match="divisible by 16"):
        at16(torch.randn(1, 3, 72, 64))
    at8 = smp.DeepLabV3Plus(encoder_name="mnv2_dense", encoder_weights=None, classes=2, encoder_output_stride=8)
    assert at8.encoder.output_stride == 8
    assert at8.eval()(torch.randn(1, 3, 72, 64)).shape == (1, 2, 72, 64)


def test_width_variants_and_in_channels() -> None:
    model = smp.Unet(encoder_name="mnv2_dense_050", encoder_weights=None, in_channels=1, classes=2,
                     encoder_depth=4, decoder_channels=(64, 32, 16, 8))
    assert model.encoder.width_mult == 0.5 and model.encoder.stem[0].in_channels == 1
    assert model.encoder.out_channels == [1, 8, 16, 16, 48]
    assert len(model.encoder.stages) == 5  # stages past stage5 (depth 4) are not built
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)
