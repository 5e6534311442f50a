"""SSD anchors (default boxes) exactly as the TensorFlow Object Detection API builds them for SSDLite.

The MobileNetV2 paper's SSDLite uses TF's ``ssd_anchor_generator`` (paper Sec. 6.2: SSDLite is trained with the TF
Object Detection API),
i.e. ``create_ssd_anchors`` in ``object_detection/anchor_generators/multiple_grid_anchor_generator.py`` and
``tile_anchors`` in ``grid_anchor_generator.py``. The rules reproduced here, with TF's defaults:

- scales ``s_k = min_scale + (max_scale - min_scale) * k / (num_layers - 1)``, plus ``1.0`` appended, used only
  as ``s_{k+1}`` of the last layer (``create_ssd_anchors``: ``scales = [...] + [1.0]``); or, as TF's optional
  ``scales`` field (``ssd_anchor_generator.proto``: "when not empty, min_scale and max_scale are not used"), one
  explicit scale per layer, still followed by ``1.0`` (anchors fitted to a dataset use it, see ``anchor_fit.py``);
- layer 0 with ``reduce_boxes_in_lowest_layer``: exactly ``[(0.1, 1.0), (s_0, 2.0), (s_0, 0.5)]``, whatever
  ``aspect_ratios`` is (TF hard-codes these three); ``lowest_layer_boxes``, an option TF does not have, replaces
  them with other ``(scale, aspect_ratio)`` pairs (anchors fitted to long thin objects need it, see
  ``anchor_fit.py``);
- every other layer: ``(s_k, ar)`` for each aspect ratio in the given order, then
  ``(sqrt(s_k * s_{k+1}), interpolated_scale_aspect_ratio)`` when that ratio is > 0;
- box size ``height = s / sqrt(ar) * base``, ``width = s * sqrt(ar) * base`` where the base anchor size is
  normalised by the *shorter* image side (``MultipleGridAnchorGenerator._generate``: ``min_im_shape / im_height``),
  so in pixels ``base = min(H, W)`` and an ``ar = 1`` anchor is square on any image;
- centres at ``((i + 0.5) / fh, (j + 0.5) / fw)`` of the image (default stride ``1 / grid``, offset half a stride);
- order: anchor spec fastest, then x, then y, then layer (``tile_anchors`` docstring) -- the order in which
  :class:`mobilenetv2_dense.heads.ssdlite.SSDLiteHead` flattens its ``(N, A*4, H, W)`` maps;
- no clipping (``clip_window=None`` by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)  # TF ssdlite_mobilenet_v2_coco.config order


def box_specs(
    *,
    num_layers: int,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
    scales: Sequence[float] | None = None,
    lowest_layer_boxes: Sequence[Sequence[float]] | None = None,
) -> list[list[tuple[float, float]]]:
    """``(scale, aspect_ratio)`` of every anchor at one location, per layer (TF ``create_ssd_anchors``).

    ``scales``: one scale per layer instead of the linear ``min_scale .. max_scale`` rule (TF's ``scales``).
    ``lowest_layer_boxes``: the ``(scale, aspect_ratio)`` pairs of the reduced lowest layer instead of TF's
    ``[(0.1, 1.0), (s_0, 2.0), (s_0, 0.5)]`` (only with ``reduce_boxes_in_lowest_layer``).
    """
    if num_layers < 1:
        raise ValueError(f"box_specs: num_layers must be >= 1, got {num_layers}; pass one per feature map")
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"box_specs: need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
    if any(ar <= 0 for ar in aspect_ratios):
        raise ValueError(f"box_specs: aspect ratios must be positive, got {tuple(aspect_ratios)}")
    if scales:
        if len(scales) != num_layers or any(s <= 0 for s in scales):
            raise ValueError(f"box_specs: scales {tuple(scales)} must hold {num_layers} positive values, one "
                             "per feature map; or pass none to use min_scale .. max_scale")
        scales = [float(s) for s in scales] + [1.0]
    else:
        # A single layer would divide by zero in TF's formula; it gets min_scale.
        step = (max_scale - min_scale) / max(num_layers - 1, 1)
        scales = [min_scale + step * k for k in range(num_layers)] + [1.0]
    lowest = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
    if lowest_layer_boxes:
        if not reduce_boxes_in_lowest_layer:
            raise ValueError("box_specs: lowest_layer_boxes replaces the reduced lowest layer's boxes; set "
                             "reduce_boxes_in_lowest_layer=True or leave lowest_layer_boxes out")
        if any(len(box) != 2 or min(box) <= 0 for box in lowest_layer_boxes):
            raise ValueError(f"box_specs: lowest_layer_boxes {[tuple(b) for b in lowest_layer_boxes]} must "
                             "be positive (scale, aspect_ratio) pairs, e.g. [[0.1, 1.0], [0.2, 2.0], [0.2, 0.5]]")
        lowest = [(float(scale), float(ratio)) for scale, ratio in lowest_layer_boxes]
    specs = []
    for layer in range(num_layers):
        scale, scale_next = scales[layer], scales[layer + 1]
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs.append(lowest)
            continue
        layer_specs = [(scale, float(ar)) for ar in aspect_ratios]
        if interpolated_scale_aspect_ratio > 0:
            layer_specs.append((math.sqrt(scale * scale_next), interpolated_scale_aspect_ratio))
        specs.append(layer_specs)
    return specs


def num_anchors_per_location(
    *,
    num_layers: int,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
    lowest_layer_boxes: Sequence[Sequence[float]] | None = None,
) -> list[int]:
    """Anchors per cell for each layer (``[3, 6, 6, 6, 6, 6]`` for the paper), known before any forward pass."""
    specs = box_specs(num_layers=num_layers, aspect_ratios=aspect_ratios,
                      interpolated_scale_aspect_ratio=interpolated_scale_aspect_ratio,
                      reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer,
                      lowest_layer_boxes=lowest_layer_boxes)
    return [len(s) for s in specs]


def ssd_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    *,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
    scales: Sequence[float] | None = None,
    lowest_layer_boxes: Sequence[Sequence[float]] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """All anchors ``(A, 4)`` as xyxy pixels of an ``image_size = (H, W)`` input, for maps ``[(fh, fw), ...]``.

    ``A = sum(fh * fw * anchors_per_location)``; 2034 for the paper's 320x320 maps (20, 10, 5, 3, 2, 1).
    """
    height, width = image_size
    specs = box_specs(num_layers=len(feature_sizes), min_scale=min_scale, max_scale=max_scale,
                      aspect_ratios=aspect_ratios, interpolated_scale_aspect_ratio=interpolated_scale_aspect_ratio,
                      reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer, scales=scales,
                      lowest_layer_boxes=lowest_layer_boxes)
    base = float(min(height, width))  # TF normalises the base anchor by the shorter side
    layers = []
    for (fh, fw), layer_specs in zip(feature_sizes, specs):
        box_scales, ratios = torch.tensor(layer_specs, dtype=torch.float64, device=device).unbind(1)
        # (B, 2) = (w, h) in pixels
        sizes = torch.stack([box_scales * ratios.sqrt(), box_scales / ratios.sqrt()], dim=1) * base
        cy = (torch.arange(fh, dtype=torch.float64, device=device) + 0.5) * (height / fh)
        cx = (torch.arange(fw, dtype=torch.float64, device=device) + 0.5) * (width / fw)
        yy, xx = torch.meshgrid(cy, cx, indexing="ij")  # (fh, fw) each
        centres = torch.stack([xx, yy], dim=-1)  # (fh, fw, 2)
        # (fh, fw, 1, 2) -/+ (B, 2) / 2 -> (fh, fw, B, 4): spec index fastest, then x, then y, as TF tiles them
        boxes = torch.cat([centres[:, :, None] - sizes / 2, centres[:, :, None] + sizes / 2], dim=-1)
        layers.append(boxes.reshape(-1, 4))  # (fh, fw, B, 4) -> (fh * fw * B, 4)
    # float64 while tiling so that large maps keep exact centres, then the dtype the network runs in.
    return torch.cat(layers).to(dtype)
