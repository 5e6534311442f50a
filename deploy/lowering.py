"""Rewrites of an exported program into ops ExecuTorch's XNNPACK delegate runs, before it is lowered.

An op XNNPACK does not take runs in ExecuTorch's portable kernels (plain loops, one thread) and splits the graph
into several delegates around it. In the deployed graphs two ops were left out (``.pte`` files of static shape,
``deploy/formats.py``; counts from ``executorch.devtools.backend_debug.get_delegation_info``):

- ``aten.upsample_bilinear2d``, the segmenter's final resize of K logit maps to the input size: XNNPACK's
  ``static_resize_bilinear`` takes only a static output size, so a dynamic batch or H, W left it to the portable
  kernel, the largest single cost of a DeepLabv3-lite ``.pte``. A static file lowers it with no rewrite.
- ``aten.expand``, DeepLabv3's image pooling broadcasting its ``(N, C, 1, 1)`` map over the feature map
  (:class:`~mobilenetv2_dense.heads.deeplab.ImagePooling`): XNNPACK has no broadcast-copy op.
  :func:`broadcast_as_resize` makes it a bilinear resize of the 1 x 1 map, which is the same broadcast (DeepLab's own
  formulation) and which XNNPACK takes at a static size: one delegate instead of two, no portable op.

The dilated depthwise convolutions of output stride 16 and the concatenation were delegated already.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

_EXPAND = torch.ops.aten.expand.default
_RESIZE = torch.ops.aten.upsample_bilinear2d.vec


def _is_spatial_broadcast(node: torch.fx.Node) -> bool:
    """``node`` expands a ``(N, C, 1, 1)`` float tensor to ``(N, C, H, W)`` of static ``H, W``."""
    if node.op != "call_function" or node.target is not _EXPAND:
        return False
    source, out = node.args[0].meta.get("val"), node.meta.get("val")
    if source is None or out is None or source.dim() != 4 or not source.dtype.is_floating_point:
        return False
    static = all(isinstance(size, int) for size in out.shape[2:])
    return static and tuple(source.shape[2:]) == (1, 1) and tuple(out.shape[:2]) == tuple(source.shape[:2])


def broadcast_as_resize(program: ExportedProgram) -> int:
    """Replace, in place, every ``expand`` of a ``(N, C, 1, 1)`` map to a static ``(N, C, H, W)`` in ``program`` by
    a bilinear resize to ``(H, W)`` (``align_corners=False``): the same values to float rounding (each output is
    ``v * (1 - a) + v * a``). Returns how many were replaced; other expands are left as they are."""
    graph = program.graph_module.graph
    replaced = 0
    for node in [n for n in graph.nodes if _is_spatial_broadcast(n)]:
        size = [int(s) for s in node.meta["val"].shape[2:]]
        with graph.inserting_before(node):
            resize = graph.call_function(_RESIZE, (node.args[0], size, False, None))
        resize.meta = dict(node.meta)
        node.replace_all_uses_with(resize)
        graph.erase_node(node)
        replaced += 1
    if replaced:
        graph.lint()
        program.graph_module.recompile()
    return replaced
