"""Conv-BN folding (deploy/fuse.py): the folded models compute what the eval-mode models compute, within 1e-4,
keep no BatchNorm module or batch-norm op, and leave the original model untouched."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mobilenetv2_dense.deploy.fuse import (
    assert_no_batchnorm,
    compile_for_inference,
    count_batchnorms,
    fold_conv_bn,
)
from mobilenetv2_dense.models import deeplabv3_mobilenet_v2, mobilenet_v2_classifier, ssdlite320_mobilenet_v2

pytestmark = pytest.mark.usefixtures("one_thread")

# name -> (builder, input size); width 0.5 and small inputs keep every forward and export well under a second.
MODELS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "ssdlite": (lambda: ssdlite320_mobilenet_v2(num_classes=4, width_mult=0.5), 128),
    "deeplab_lite": (lambda: deeplabv3_mobilenet_v2(num_classes=5, width_mult=0.5, head="lite", decoder=True), 96),
    "deeplab_aspp": (lambda: deeplabv3_mobilenet_v2(num_classes=5, width_mult=0.5, head="aspp", decoder=True), 96),
    "classifier": (lambda: mobilenet_v2_classifier(num_classes=10, width_mult=0.5), 96),
}


@torch.no_grad()
def randomise_batchnorms(model: nn.Module) -> nn.Module:
    """Fresh BNs are the identity in eval mode (mean 0, var 1, gamma 1, beta 0); random ones make the fold matter."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def build(name: str) -> tuple[nn.Module, Tensor]:
    """A seeded model with random BN statistics, in eval mode, and an input ``(2, 3, S, S)`` for it."""
    builder, size = MODELS[name]
    torch.manual_seed(0)
    model = randomise_batchnorms(builder()).eval()
    return model, torch.randn(2, 3, size, size)


def assert_outputs_close(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-4, rtol=1e-5,
                                   msg=lambda message, key=key: f"{key}: {message}")


@pytest.mark.parametrize("name", list(MODELS))
def test_fold_matches_eval_and_leaves_no_batchnorm(name: str) -> None:
    model, x = build(name)
    with torch.no_grad():
        expected = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    bn_count = count_batchnorms(model)
    assert bn_count > 0
    model.train()  # the fold must work from a training-mode model and leave its mode alone

    folded = fold_conv_bn(model)

    assert count_batchnorms(folded) == 0
    assert not folded.training
    with torch.no_grad():
        assert_outputs_close(folded(x), expected)
    # Export runs on a copy: the SSDLite anchor cache it fills while tracing must not end up in ``folded``.
    assert_no_batchnorm(folded, x[:1])
    with torch.no_grad():
        assert_outputs_close(folded(x), expected)

    assert model.training
    assert count_batchnorms(model) == bn_count
    assert model.state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    with torch.no_grad():
        again = model.eval()(x)
    for key in expected:
        assert torch.equal(again[key], expected[key]), key


def test_fold_keeps_channels_last_and_dtype() -> None:
    model, x = build("classifier")
    model = model.to(dtype=torch.float64, memory_format=torch.channels_last)
    x = x.to(torch.float64).contiguous(memory_format=torch.channels_last)
    folded = fold_conv_bn(model)
    stem = folded.stem[0].weight  # (16, 3, 3, 3): the one layout that differs between the two formats
    assert stem.dtype == torch.float64
    assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(folded(x)["logits"], model(x)["logits"], atol=1e-10, rtol=1e-10)


class CustomOrder(nn.Sequential):
    """A Sequential whose forward does not feed its conv straight into its BN."""

    def forward(self, x: Tensor) -> Tensor:
        return self[1](self[0](x) + 1.0)


def test_fold_reports_what_it_cannot_fold() -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)),  # folded
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)),  # BN not right after the conv
        CustomOrder(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)),  # Sequential with its own forward
    )
    randomise_batchnorms(model).eval()
    with pytest.raises(ValueError, match=r"could not fold 2 BatchNorm\(s\) of Sequential: 1\.2, 2\.1"):
        fold_conv_bn(model)

    partial = fold_conv_bn(model, strict=False)
    assert count_batchnorms(partial) == 2
    assert isinstance(partial[0][1], nn.Identity)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(partial(x), model(x), atol=1e-5, rtol=1e-5)


def test_assert_no_batchnorm_rejects_unfolded_model() -> None:
    model, x = build("classifier")
    with pytest.raises(RuntimeError, match=r"still has 52 BatchNorm module\(s\): stem\.1, stages\.0\.0\.depthwise\.1"):
        assert_no_batchnorm(model, x[:1])


class FunctionalBatchNorm(nn.Module):
    """Batch norm without a BatchNorm module: only the exported graph shows it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("mean", torch.zeros(4))
        self.register_buffer("var", torch.ones(4))

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(self.conv(x), self.mean, self.var, training=False)


def test_assert_no_batchnorm_finds_functional_batch_norm() -> None:
    model = FunctionalBatchNorm().eval()
    assert count_batchnorms(model) == 0
    with pytest.raises(RuntimeError, match="exported graph of FunctionalBatchNorm still calls .*batch_norm"):
        assert_no_batchnorm(model, torch.randn(1, 3, 8, 8))


@pytest.mark.slow  # inductor's C++ build: ~33 s with a cold cache on 2 cores, ~5 s once cached
def test_compile_for_inference_matches_eager() -> None:
    model, x = build("classifier")
    compiled = compile_for_inference(model, example=x)
    assert count_batchnorms(compiled.module) == 0
    assert count_batchnorms(model) > 0
    with torch.no_grad():
        expected = model(x)
    assert_outputs_close(compiled(x), expected)
    other = torch.randn_like(x)  # same shape, new values: the compiled graph, not a cached result
    with torch.no_grad():
        assert_outputs_close(compiled(other), model(other))


def test_compile_for_inference_rejects_unknown_mode() -> None:
    with pytest.raises(RuntimeError, match="Unrecognized mode=fastest"):
        compile_for_inference(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), mode="fastest")
