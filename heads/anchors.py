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

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

DEFAULT_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)  # TF ssdlite_mobilenet_v2_coco.config order


@dataclass
class AnchorSettings:
    """The default-box generator's values (TF ``ssd_anchor_generator``), validated once, used by the head, the model,
    the tasks (their ``anchors`` block), the ``anchors`` command's YAML and the export sidecar.

    Treated as a value: changes go through :meth:`replace`, never by assigning a field (the class is not frozen
    because Lightning rebuilds hyper-parameter dataclasses field by field when it writes ``hparams.yaml``).

    Args:
        min_scale, max_scale: the linear rule's first and last layer scales (fractions of the shorter image side).
        aspect_ratios: the ratios every layer but a reduced lowest one tiles, in TF's order.
        interpolated_scale_aspect_ratio: the ratio of the extra anchor at ``sqrt(s_k * s_{k+1})`` (<= 0: none).
        reduce_boxes_in_lowest_layer: TF's three fixed boxes on the lowest layer.
        scales: one explicit scale per layer instead of the linear rule (TF's ``scales``), e.g. fitted to data.
        lowest_layer_boxes: the reduced lowest layer's ``(scale, aspect_ratio)`` pairs instead of TF's
            ``[(0.1, 1.0), (s_0, 2.0), (s_0, 0.5)]`` (an option TF does not have; fitted anchors use it).
    """

    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = DEFAULT_ASPECT_RATIOS
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    scales: tuple[float, ...] | None = None
    lowest_layer_boxes: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        # YAML and the CLI give lists: keep tuples, so settings compare and print alike however they came.
        self.aspect_ratios = tuple(float(r) for r in self.aspect_ratios)
        if self.scales is not None:
            self.scales = tuple(float(s) for s in self.scales) or None
        if self.lowest_layer_boxes is not None:
            self.lowest_layer_boxes = tuple(tuple(float(v) for v in box) for box in self.lowest_layer_boxes) or None
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"AnchorSettings: need 0 < min_scale <= max_scale, got {self.min_scale}, "
                             f"{self.max_scale}")
        if not self.aspect_ratios or any(ar <= 0 for ar in self.aspect_ratios):
            raise ValueError(f"AnchorSettings: aspect ratios must be positive, got {self.aspect_ratios}")
        if self.scales and any(s <= 0 for s in self.scales):
            raise ValueError(f"AnchorSettings: scales {self.scales} must be positive, one per feature map; or "
                             "null to use min_scale .. max_scale")
        if self.lowest_layer_boxes:
            if not self.reduce_boxes_in_lowest_layer:
                raise ValueError("AnchorSettings: lowest_layer_boxes replaces the reduced lowest layer's boxes; set "
                                 "reduce_boxes_in_lowest_layer=True or leave lowest_layer_boxes out")
            if any(len(box) != 2 or min(box) <= 0 for box in self.lowest_layer_boxes):
                raise ValueError(f"AnchorSettings: lowest_layer_boxes {self.lowest_layer_boxes} must be positive "
                                 "(scale, aspect_ratio) pairs, e.g. [[0.1, 1.0], [0.2, 2.0], [0.2, 0.5]]")

    def replace(self, **changes: Any) -> AnchorSettings:
        """These settings with some fields changed (validated again)."""
        unknown = set(changes) - {field.name for field in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"AnchorSettings.replace: unknown anchor settings {sorted(unknown)}; known: "
                             f"{[field.name for field in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def plain(self) -> dict[str, Any]:
        """The fields with lists for tuples: what a YAML config, the CLI and a JSON sidecar hold."""
        def to_list(value: Any) -> Any:
            return [to_list(v) for v in value] if isinstance(value, (list, tuple)) else value

        return {field.name: to_list(getattr(self, field.name)) for field in dataclasses.fields(self)}

    def layer_scales(self, num_layers: int) -> list[float]:
        """``s_0 .. s_{L-1}``: the explicit ``scales``, or TF's linear rule from ``min_scale`` to ``max_scale``."""
        if self.scales:
            if len(self.scales) != num_layers:
                raise ValueError(f"AnchorSettings: scales {self.scales} must hold {num_layers} values, one per "
                                 "feature map; or null to use min_scale .. max_scale")
            return list(self.scales)
        # A single layer would divide by zero in TF's formula; it gets min_scale.
        step = (self.max_scale - self.min_scale) / max(num_layers - 1, 1)
        return [self.min_scale + step * k for k in range(num_layers)]


def box_specs(settings: AnchorSettings = AnchorSettings(), *, num_layers: int) -> list[list[tuple[float, float]]]:
    """``(scale, aspect_ratio)`` of every anchor at one location, per layer (TF ``create_ssd_anchors``)."""
    if num_layers < 1:
        raise ValueError(f"box_specs: num_layers must be >= 1, got {num_layers}; pass one per feature map")
    scales = settings.layer_scales(num_layers) + [1.0]
    lowest = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
    if settings.lowest_layer_boxes:
        lowest = list(settings.lowest_layer_boxes)
    specs = []
    for layer in range(num_layers):
        scale, scale_next = scales[layer], scales[layer + 1]
        if layer == 0 and settings.reduce_boxes_in_lowest_layer:
            specs.append(lowest)
            continue
        layer_specs = [(scale, ar) for ar in settings.aspect_ratios]
        if settings.interpolated_scale_aspect_ratio > 0:
            layer_specs.append((math.sqrt(scale * scale_next), settings.interpolated_scale_aspect_ratio))
        specs.append(layer_specs)
    return specs


def num_anchors_per_location(settings: AnchorSettings = AnchorSettings(), *, num_layers: int) -> list[int]:
    """Anchors per cell for each layer (``[3, 6, 6, 6, 6, 6]`` for the paper), known before any forward pass."""
    return [len(s) for s in box_specs(settings, num_layers=num_layers)]


def ssd_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    settings: AnchorSettings = AnchorSettings(),
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """All anchors ``(A, 4)`` as xyxy pixels of an ``image_size = (H, W)`` input, for maps ``[(fh, fw), ...]``.

    ``A = sum(fh * fw * anchors_per_location)``; 2034 for the paper's 320x320 maps (20, 10, 5, 3, 2, 1).
    """
    height, width = image_size
    specs = box_specs(settings, num_layers=len(feature_sizes))
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


# Tasks keep their AnchorSettings in their hyper-parameters: checkpoints must load with weights_only=True.
torch.serialization.add_safe_globals([AnchorSettings])
