"""int8 post-training quantisation: of an exported ONNX graph (ONNX Runtime's static quantisation, QDQ format,
:func:`quantize_onnx`) and of a deployed graph's network before ExecuTorch lowering (PT2E, :func:`quantize_pt2e`).

Weights int8 per output channel, activations per tensor, calibrated on training images: uint8 by min / max in ONNX
Runtime, int8 by XNNPACK's histogram observers in PT2E (a range search per tensor that clips rare outliers). In a
detector only the convolutions are quantised (``QUANTISED_OPS``): the in-graph post-processing (softmax, box
decoding, IoU, NMS) and the normalisation stay float, since int8 box coordinates would move boxes by whole pixels and
change which ones NMS keeps. Segmenters and classifiers quantise their other
network ops too (``QUANTISED_OPS_DENSE``); their normalisation (``Sub``, ``Div``) stays float.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

QUANTISED_OPS = ("Conv", "Gemm", "MatMul")
# Segmentation and classification graphs end in an argmax or logits, with no coordinates to keep exact: their adds,
# activations, pooling, resizing and concatenations run in int8 too, so that one int8 tensor flows from conv to conv
# instead of a dequantise / quantise pair around each.
QUANTISED_OPS_DENSE = (*QUANTISED_OPS, "Add", "Mul", "Clip", "Relu", "GlobalAveragePool", "Resize", "Concat")


class _Images:
    """``onnxruntime.quantization.CalibrationDataReader`` over ``[0, 1]`` image batches."""

    def __init__(self, batches: Iterable[Tensor]) -> None:
        self._batches: Iterator[Tensor] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"images": batch.detach().to("cpu", torch.float32).numpy()}


def quantize_onnx(fp32: str | Path, output: str | Path, calibration: Iterable[Tensor], *,
                  op_types: Iterable[str] = QUANTISED_OPS, per_channel: bool = True) -> Path:
    """Write the int8 (QDQ) version of the float ONNX model ``fp32`` to ``output``.

    Args:
        fp32: the float model (``export.py --format onnx``).
        output: the int8 file.
        calibration: ``(n, 3, H, W)`` float batches in ``[0, 1]`` (the graph's input), typically training images.
        op_types: the ONNX op types to quantise (``QUANTISED_OPS`` for a detector, ``QUANTISED_OPS_DENSE`` else).
        per_channel: one weight scale per output channel (per-tensor loses ~10 top-1 on MobileNetV2 in PyTorch's
            quantisation tutorial: depthwise filters differ in range by orders of magnitude).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        # Shape inference and graph clean-up first, as ONNX Runtime recommends before quantising.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(output), _Images(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    return output


def quantize_pt2e(graph: torch.nn.Module, example: Tensor, calibration: Iterable[Tensor], *,
                  dynamic_shapes: dict) -> torch.nn.Module:
    """A copy of the deployed ``graph`` whose ``network`` is int8 (PT2E) for ExecuTorch's XNNPACK delegate.

    The network alone (:class:`mobilenetv2_dense.deploy.graph.Network`) goes through ``torch.export`` ->
    ``prepare_pt2e`` with XNNPACK's quantiser (int8, symmetric per-channel weights, per-tensor activations with
    histogram observers, every supported op) ->
    calibration on the normalised ``[0, 1]`` batches -> ``convert_pt2e``; the normalisation and the post-processing
    stay float, as in :func:`quantize_onnx`. (The quantiser's ``set_module_name`` on the whole graph would be the
    shorter way, but its filter rejects every convolution, whose weight nodes carry no module path, so it
    quantised none: checked by counting ``dequantize_per_channel`` nodes.)
    """
    import copy

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from .observers import xnnpack_config

    graph = copy.deepcopy(graph).eval()
    quantizer = XNNPACKQuantizer().set_global(xnnpack_config())
    with torch.no_grad():
        module = torch.export.export(graph.network, (graph.normalize(example),),
                                     dynamic_shapes=dynamic_shapes).module()
        prepared = prepare_pt2e(module, quantizer)
        for batch in calibration:
            prepared(graph.normalize(batch))
    graph.network = convert_pt2e(prepared)
    return graph


def count_onnx_int8_layers(path: str | Path) -> int:
    """Conv / Gemm / MatMul nodes of an ONNX model whose weight comes through ``DequantizeLinear`` (int8)."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    return sum(1 for node in graph.node if node.op_type in QUANTISED_OPS and len(node.input) > 1
               and node.input[1] in dequantized)


def count_int8_weights(module: torch.nn.Module) -> int:
    """Per-channel weight dequantisations in a ``convert_pt2e`` graph: one per int8 convolution / linear."""
    return sum(1 for node in module.graph.nodes
               if node.op == "call_function" and "dequantize_per_channel" in str(node.target))
