"""Writing a deployed graph (``deploy/graph.py``) to a file: ONNX (dynamo exporter) or ExecuTorch ``.pte``.

Both go through ``torch.export``. An ONNX file has dynamic dimensions: the batch always, and the image height and
width where the graph allows it (segmentation and classification; detection's anchors are constants of one size).
An ExecuTorch file is static, ``(1, 3, H, W)`` at the export's size, as mobile runtimes take a model: XNNPACK then
runs every op of a segmenter, its final bilinear resize included (it takes a resize of static size only,
``deploy/lowering.py``), and ExecuTorch plans memory for that one input, where the upper bounds of dynamic
dimensions (:data:`MAX_BATCH` images of :data:`MAX_SIZE` squared) made it plan gigabytes for a segmenter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn
from torch.export import Dim

from .lowering import broadcast_as_resize

if TYPE_CHECKING:
    from executorch.exir import EdgeProgramManager

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


def lower_to_xnnpack(graph: nn.Module, example: Tensor) -> EdgeProgramManager:
    """``torch.export`` of one image of ``example`` ``(N, 3, H, W)``, every dimension static -> the rewrites of
    :mod:`~mobilenetv2_dense.deploy.lowering` -> ``to_edge_transform_and_lower`` with the XNNPACK partitioner.

    Every op of a classifier or segmenter runs in XNNPACK, in one delegate; of a detector, what it does not take
    (top-k, gathers, the NMS logic) runs in ExecuTorch's portable kernels.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(graph, (example[:1],))
    broadcast_as_resize(program)
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def export_executorch(graph: nn.Module, example: Tensor, path: str | Path) -> Path:
    """:func:`lower_to_xnnpack` -> ``.pte`` taking ``(1, 3, H, W)`` at ``example``'s size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lower_to_xnnpack(graph, example).to_executorch().buffer)
    return path


def export_graph(graph: nn.Module, example: Tensor, path: str | Path, *, format: Format,
                 output_names: Sequence[str], dynamic_size: bool, min_size: int = MIN_SIZE) -> tuple[Path, float]:
    """Export in ``format``; returns the file and the seconds it took. ``dynamic_size``, ``min_size``: whether H and
    W are dynamic in an ONNX file and the smallest (a classifier needs 64:
    :attr:`mobilenetv2_dense.deploy.graph.ClassifierGraph.min_size`); an ExecuTorch file is static at ``example``'s
    size."""
    start = time.perf_counter()
    with torch.no_grad():
        if format == "onnx":
            path = export_onnx(graph, example, path, output_names=output_names, dynamic_size=dynamic_size,
                               min_size=min_size)
        elif format == "executorch":
            path = export_executorch(graph, example, path)
        else:
            raise ValueError(f"export_graph: format must be 'onnx' or 'executorch', got {format!r}")
    return path, time.perf_counter() - start
