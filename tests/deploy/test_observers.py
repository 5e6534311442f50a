"""The faster histogram observer gives torchao's ranges, and XNNPACK's PTQ config uses it and nothing else changes."""

from __future__ import annotations

import pytest
import torch
from torchao.quantization.pt2e import HistogramObserver as TorchaoHistogramObserver

from mobilenetv2_dense.deploy.observers import HistogramObserver, xnnpack_config

INT8 = dict(dtype=torch.qint8, qscheme=torch.per_tensor_affine, quant_min=-128, quant_max=127, eps=2**-12)


def _batches() -> dict[str, list[torch.Tensor]]:
    torch.manual_seed(0)
    return {
        "normal": [torch.randn(2, 16, 24, 24)],
        "relu6, two batches": [torch.clamp(torch.randn(2, 32, 12, 12) * 3, 0, 6), torch.rand(2, 32, 12, 12) * 4],
        "mostly zeros (a dead ReLU)": [torch.relu(torch.randn(2, 64, 12, 12) - 2.5)],
        "an outlier": [torch.cat([torch.randn(5000), torch.tensor([80.0, -3.0])])],
        "heavy tail": [torch.randn(2, 8, 10, 10).exp()],
        "one value (the search runs to its end)": [torch.zeros(2, 4, 8, 8)],
        "tiny values": [torch.randn(1000) * 1e-3],
    }


@pytest.mark.parametrize("case", list(_batches()))
def test_same_ranges_as_torchao(case: str) -> None:
    reference, faster = TorchaoHistogramObserver(**INT8), HistogramObserver(**INT8)
    for batch in _batches()[case]:
        reference(batch)
        faster(batch)
    expected, got = reference.calculate_qparams(), faster.calculate_qparams()
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]), (got, expected)


def test_xnnpack_config_differs_only_in_the_activation_observer() -> None:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    upstream, ours = get_symmetric_quantization_config(is_per_channel=True), xnnpack_config()
    assert ours.weight == upstream.weight and ours.bias == upstream.bias and ours.is_qat == upstream.is_qat
    for spec, reference in ((ours.input_activation, upstream.input_activation),
                            (ours.output_activation, upstream.output_activation)):
        observer, expected = spec.observer_or_fake_quant_ctr(), reference.observer_or_fake_quant_ctr()
        assert type(observer) is HistogramObserver and type(expected) is TorchaoHistogramObserver
        assert (observer.eps, observer.bins, observer.dtype) == (expected.eps, expected.bins, expected.dtype)
        assert (spec.dtype, spec.quant_min, spec.quant_max, spec.qscheme) == (
            reference.dtype, reference.quant_min, reference.quant_max, reference.qscheme)
