"""The ``mnv2_dense`` segmentation-models-pytorch encoder: registry, feature contract, smp models, weights,
preprocessing, ``in_channels`` with torchvision weights, and saved models loaded in a new process."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import timm
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
    preprocessing = smp.encoders.get_preprocessing_params
    register_smp_encoder()
    assert smp.encoders.get_preprocessing_params is preprocessing  # wrapped once, not once per call
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
        "assert not hasattr(smp.encoders.get_preprocessing_params, 'serves_mnv2_dense')\n"
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


# ------------------------------------------------------------------------------ what a user meets next
def test_preprocessing_fn_is_torchvisions_imagenet_normalisation_without_download() -> None:
    """get_preprocessing_fn answers for every mnv2_dense name (no hub download) and still for smp's other names."""
    preset = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.float64)  # (H, W, 3), 0..255
    for name in SMP_ENCODER_WIDTHS:
        params = smp.encoders.get_preprocessing_params(name)
        assert params == {"input_space": "RGB", "input_range": [0, 1], "mean": preset.mean, "std": preset.std}
        preprocess = smp.encoders.get_preprocessing_fn(name, pretrained="imagenet")
        np.testing.assert_allclose(preprocess(image), (image / 255 - preset.mean) / preset.std)
    timm_params = smp.encoders.get_preprocessing_params("tu-mobilenetv2_100")  # timm's own config, offline
    assert timm_params["mean"] == list(timm.models.get_pretrained_cfg("mobilenetv2_100").mean)
    with pytest.raises(ValueError, match=r"pretrained='instagram'.*pretrained='imagenet'"):
        smp.encoders.get_preprocessing_fn("mnv2_dense", pretrained="instagram")


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None, width_mult=0.5).eval()
    for m in reference.modules():  # non-identity BN statistics, so the comparison is not degenerate
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(1.0, 2.0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_050.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def _encoder(in_channels: int, path: Path) -> MobileNetV2Encoder:
    model = smp.Unet(encoder_name="mnv2_dense_050", encoder_weights=None, in_channels=in_channels, classes=2,
                     encoder_depth=3, decoder_channels=(16, 8, 4))
    model.encoder.load_weights(path)
    return model.encoder.eval()


@pytest.mark.parametrize("in_channels", [1, 2, 4, 6])
def test_torchvision_weights_load_after_in_channels(torchvision_weights, in_channels: int) -> None:
    """The RGB stem spreads over in_channels as smp's patch_first_conv spreads its own encoders' pretrained stems;
    every other tensor is the file's."""
    reference, path = torchvision_weights
    encoder, rgb = _encoder(in_channels, path), _encoder(3, path)
    assert encoder.stem[0].in_channels == in_channels and encoder.out_channels[0] == in_channels
    weight = reference.features[0][0].weight  # (C, 3, 3, 3)
    if in_channels == 1:
        expected = weight.sum(1, keepdim=True)
    else:
        expected = weight[:, [i % 3 for i in range(in_channels)]] * (3 / in_channels)
    torch.testing.assert_close(encoder.stem[0].weight, expected, rtol=0, atol=0)
    theirs = rgb.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in encoder.state_dict().items() if k != "stem.0.weight")
    # What the scaling is for: a gray image, or in_channels / 3 copies of an RGB one, gives the RGB response.
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        if in_channels in (1, 6):
            copies = x[:, :1] if in_channels == 1 else x.repeat(1, 2, 1, 1)
            rgb_in = x[:, :1].repeat(1, 3, 1, 1) if in_channels == 1 else x
            torch.testing.assert_close(encoder(copies)[-1], rgb(rgb_in)[-1], rtol=1e-4, atol=1e-5)


def test_weights_saved_at_in_channels_load_and_other_shapes_name_the_model(torchvision_weights, tmp_path) -> None:
    _, path = torchvision_weights
    four = _encoder(4, path)
    saved = tmp_path / "encoder_4ch.pth"
    torch.save(four.state_dict(), saved)
    again = _encoder(4, saved)
    torch.testing.assert_close(again.stem[0].weight, four.stem[0].weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"stem\.0\.weight: file \(16, 4, 3, 3\) vs model \(16, 5, 3, 3\)"):
        _encoder(5, saved)
    stem = four.stem[0].weight
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        four.load_weights(tmp_path / "missing.pth")
    assert four.stem[0].weight is stem and four.stem[0].in_channels == 4  # the stem is left as it was


def test_saved_model_loads_in_a_new_process(tmp_path) -> None:
    """smp has no entry point for encoders: a bare smp.from_pretrained in a new process stops at the encoder name,
    from_pretrained (ours) registers and loads it, with the same outputs."""
    torch.manual_seed(0)
    model = smp.Unet(encoder_name="mnv2_dense_050", encoder_weights=None, in_channels=4, classes=3,
                     encoder_depth=3, decoder_channels=(16, 8, 4)).eval()
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        torch.save({"x": x, "y": model(x)}, tmp_path / "io.pt")
    model.save_pretrained(tmp_path / "saved")
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, torch\n"
        "import segmentation_models_pytorch as smp\n"
        "try:\n"
        "    smp.from_pretrained(sys.argv[1])\n"
        "except KeyError as error:\n"
        "    assert 'mnv2_dense_050' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('smp found mnv2_dense_050 unregistered: from_pretrained docs are out of date')\n"
        "from mobilenetv2_dense.backbone.smp_encoder import from_pretrained\n"
        "model = from_pretrained(sys.argv[1]).eval()\n"
        "io = torch.load(sys.argv[2])\n"
        "with torch.no_grad():\n"
        "    torch.testing.assert_close(model(io['x']), io['y'], rtol=0, atol=0)\n"
        "assert type(model.encoder).__name__ == 'MobileNetV2Encoder' and model.encoder.stem[0].in_channels == 4\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "saved"), str(tmp_path / "io.pt")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
