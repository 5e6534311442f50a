"""Writing a deployed graph (``deploy/graph.py``) to a file: ONNX (dynamo exporter) or ExecuTorch ``.pte``.

Both go through ``torch.export`` with the same dynamic dimensions: the batch always, and the image height and
width where the graph allows it (segmentation and classification; detection's anchors are constants of one size).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.export import Dim

Format = Literal["onnx", "executorch"]
SUFFIX = {"onnx": ".onnx", "executorch": ".pte", "litert": ".tflite"}  # litert: written by deploy/litert.py
ONNX_OPSET = 18
MAX_BATCH = 64
MIN_SIZE, MAX_SIZE = 32, 2048  # the range of a dynamic H and W (a graph may raise the minimum: ``min_size``)


def dynamic_shapes(dynamic_size: bool, *, min_size: int = MIN_SIZE, max_size: int = MAX_SIZE) -> dict:
    """``torch.export`` dims of the ``images`` input: N, and H and W in ``[min_size, max_size]`` when
    ``dynamic_size`` (any size works: the segmentation head upsamples to the input, the classifier pools)."""
    dims = {0: Dim("batch", min=1, max=MAX_BATCH)}
    if dynamic_size:
        dims.update({2: Dim("height", min=min_size, max=max_size), 3: Dim("width", min=min_size, max=max_size)})
    return {"images": dims}


def export_onnx(graph: nn.Module, example: Tensor, path: str | Path, *, output_names: Sequence[str],
                dynamic_size: bool, min_size: int = MIN_SIZE, opset: int = ONNX_OPSET) -> Path:
    """``torch.onnx.export(..., dynamo=True)`` of ``graph`` on ``example (N, 3, H, W)``, one input ``images``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(graph, (example,), input_names=["images"], output_names=list(output_names),
                                dynamic_shapes=dynamic_shapes(dynamic_size, min_size=min_size), dynamo=True,
                                opset_version=opset, optimize=False, verbose=False)
    program.save(str(path))
    return path


def export_executorch(graph: nn.Module, example: Tensor, path: str | Path, *, dynamic_size: bool,
                      min_size: int = MIN_SIZE) -> Path:
    """``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner -> ``.pte``.

    The convolutions, the activations and most element-wise ops run in XNNPACK; what it does not take (top-k,
    gathers, the NMS logic) runs in ExecuTorch's portable kernels.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.export.export(graph, (example,), dynamic_shapes=dynamic_shapes(dynamic_size, min_size=min_size))
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(lowered.buffer)
    return path


def export_graph(graph: nn.Module, example: Tensor, path: str | Path, *, format: Format,
                 output_names: Sequence[str], dynamic_size: bool, min_size: int = MIN_SIZE) -> tuple[Path, float]:
    """Export in ``format``; returns the file and the seconds it took. ``min_size``: the smallest dynamic H, W
    (a classifier needs 64: :attr:`mobilenetv2_dense.deploy.graph.ClassifierGraph.min_size`)."""
    start = time.perf_counter()
    with torch.no_grad():
        if format == "onnx":
            path = export_onnx(graph, example, path, output_names=output_names, dynamic_size=dynamic_size,
                               min_size=min_size)
        elif format == "executorch":
            path = export_executorch(graph, example, path, dynamic_size=dynamic_size, min_size=min_size)
        else:
            raise ValueError(f"export_graph: format must be 'onnx' or 'executorch', got {format!r}")
    return path, time.perf_counter() - start
