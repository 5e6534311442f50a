"""Anchors fitted to a dataset: how many ground-truth boxes SSD's anchors can reach, and a search for anchor
generator values that reach more of them.

SSD's default boxes (:mod:`mobilenetv2_dense.heads.anchors`) are TF's, tuned to COCO's mostly near-square objects.
On other shapes (long thin objects, very small ones) many boxes have no anchor at IoU >= 0.5: each of those gets
only the single low-IoU anchor that SSD's matcher forces onto it, and the detector has to learn large corrections
from few positives.

- :func:`best_possible_recall` (BPR): the share of ground-truth boxes that, after SSD's matching
  (:func:`mobilenetv2_dense.heads.matcher.match_anchors`), own an anchor at IoU >= 0.5, i.e. the recall a detector
  that classified every positive anchor right could reach without regressing anything. Computed with the model's
  real anchors against the boxes where they are in the input, so the grid's positions count as well as the shapes.
- :func:`fit_anchor_settings`: a start from k-means on the boxes' log aspect ratios and log scales, then an
  evolutionary search in the manner of Ultralytics' autoanchor for YOLO (``utils/autoanchor.py``,
  ``kmean_anchors``: multiply the values by random factors, keep the mutant if the fitness improves) over the
  generator's values: per-layer scales, aspect ratios, the interpolated anchor's ratio, the lowest layer's boxes.
  The number of anchors per location never changes, so the head's convolutions and trained weights stay valid.

The search scores a candidate by ``share of boxes whose best anchor reaches the threshold + mean best IoU``, where a
box's best IoU is taken over every layer's anchor shapes placed at the cell nearest the box's centre. That is exact
(for one anchor shape the IoU only falls as the centres move apart along x or y, and the nearest cell is nearest on
both axes), and costs ``boxes x anchors per location`` per candidate instead of ``boxes x anchors``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from .anchors import AnchorSettings, box_specs
from .matcher import match_iou, pad_boxes

# Search bounds (log space): scales 1% .. 200% of the short side, aspect ratios 1:20 .. 20:1.
LOG_SCALE_RANGE = (math.log(0.01), math.log(2.0))
LOG_RATIO_RANGE = (math.log(1 / 20), math.log(20.0))


class AnchorStats(NamedTuple):
    """``bpr``: share of boxes recalled at the threshold after matching; ``mean_best_iou``: mean over boxes of the
    best IoU with any anchor; ``boxes``: how many boxes were scored."""

    bpr: float
    mean_best_iou: float
    boxes: int


def best_possible_recall(gt_boxes: Sequence[Tensor], anchors: Tensor, *, iou_threshold: float = 0.5,
                         max_elements: int = 1 << 24) -> AnchorStats:
    """BPR and mean best IoU of ``anchors (A, 4)`` for per-image ground truth ``gt_boxes`` (``(M_i, 4)`` each), all
    xyxy in the same input pixels.

    A box counts as recalled when an anchor that SSD's matcher assigns to it has IoU >= ``iou_threshold``: an anchor
    at 0.6 with two boxes goes to the one it overlaps more, and the best anchor forced onto a box below the threshold
    does not count. Images are matched in chunks of at most ``max_elements`` (image, box, anchor) IoUs, most boxes
    first so that little padding is scored.
    """
    counts = torch.tensor([len(b) for b in gt_boxes], dtype=torch.long)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("best_possible_recall: no ground-truth boxes to score; the training split has no objects")
    order = torch.argsort(counts, descending=True, stable=True)
    order = order[counts[order] > 0]
    recalled, best_sum, start = 0, 0.0, 0
    while start < len(order):
        most = int(counts[order[start]])
        chunk = order[start:start + max(1, max_elements // (most * len(anchors)))].tolist()
        start += len(chunk)
        padded, valid = pad_boxes([gt_boxes[i].to(anchors) for i in chunk])  # (N, M, 4), (N, M)
        n, m = valid.shape
        # (N * M, 4) x (A, 4) -> (N, M, A); padding rows at -1, as match_anchors does
        iou = box_iou(padded.reshape(-1, 4), anchors).reshape(n, m, -1).masked_fill(~valid[:, :, None], -1.0)
        matches = match_iou(iou, valid, iou_threshold)  # (N, A)
        owned = matches[:, None, :] == torch.arange(m, device=anchors.device)[None, :, None]  # (N, M, A)
        recalled += int(((owned & (iou >= iou_threshold)).any(dim=2) & valid).sum())
        best_sum += float(iou.amax(dim=2)[valid].sum())
    return AnchorStats(recalled / total, best_sum / total, total)


def nearest_anchor_iou(boxes: Tensor, specs: Sequence[Sequence[tuple[float, float]]],
                       feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]) -> Tensor:
    """``(B,)`` best IoU of each of ``boxes (B, 4)`` (xyxy input pixels) with the anchors of ``specs`` (per layer
    ``(scale, aspect_ratio)`` pairs, :func:`mobilenetv2_dense.heads.anchors.box_specs`) tiled on ``feature_sizes``
    for an ``image_size = (H, W)`` input: equal to ``box_iou(boxes, ssd_anchors(...)).amax(1)`` (see the module
    docstring), at a fraction of the cost."""
    return _best_iou(boxes[:, 2:] - boxes[:, :2], _cell_offsets(boxes, feature_sizes, image_size),
                     *_anchor_shapes(specs, image_size, boxes))


def _cell_offsets(boxes: Tensor, feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]) -> Tensor:
    """``(L, B, 2)``: |x|, |y| distance of each box centre to the centre of the nearest cell of each map. It does
    not depend on the anchor shapes, so a search computes it once."""
    height, width = image_size
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (B, 2) x, y
    offsets = []
    for fh, fw in feature_sizes:
        stride = boxes.new_tensor([width / fw, height / fh])
        cell = torch.minimum((centre / stride).floor().clamp(min=0), boxes.new_tensor([fw - 1, fh - 1]))  # (B, 2)
        offsets.append((centre - (cell + 0.5) * stride).abs())
    return torch.stack(offsets)


def _anchor_shapes(specs: Sequence[Sequence[tuple[float, float]]], image_size: tuple[int, int],
                   like: Tensor) -> tuple[Tensor, Tensor]:
    """``(T, 2)`` w, h in pixels of every anchor shape of ``specs`` (all layers) and ``(T,)`` the layer of each."""
    pairs = like.new_tensor([pair for layer in specs for pair in layer])  # (T, 2) scale, ratio
    layer = torch.tensor([k for k, specs_k in enumerate(specs) for _ in specs_k], device=like.device)
    base = float(min(image_size))  # as ssd_anchors: anchor sizes are fractions of the shorter side
    return torch.stack([pairs[:, 0] * pairs[:, 1].sqrt(), pairs[:, 0] / pairs[:, 1].sqrt()], dim=1) * base, layer


def _best_iou(size: Tensor, offsets: Tensor, shapes: Tensor, layer: Tensor) -> Tensor:
    """``(B,)`` best IoU of boxes of ``size (B, 2)`` whose centres are ``offsets (L, B, 2)`` from their nearest cell
    centres, over anchors of ``shapes (T, 2)`` on maps ``layer (T,)``."""
    offset = offsets[layer].transpose(0, 1)  # (L, B, 2) -> (T, B, 2) -> (B, T, 2)
    # 1-D overlap of intervals of lengths a, b whose centres are d apart: min((a + b) / 2 - d, a, b), at least 0
    overlap = torch.minimum((size[:, None] + shapes[None]) / 2 - offset,
                            torch.minimum(size[:, None], shapes[None])).clamp(min=0)  # (B, T, 2)
    inter = overlap.prod(dim=2)  # (B, T)
    return (inter / (size.prod(dim=1)[:, None] + shapes.prod(dim=1)[None] - inter)).amax(dim=1)


@dataclass
class AnchorFit:
    """What :func:`fit_anchor_settings` found: ``settings`` (as ``SSDLite.anchor_settings``), the search's fitness
    (share of boxes reachable + mean best IoU, on the boxes it used) of the given settings and of the result, and
    which start the search took (``"given"`` or ``"k-means"``)."""

    settings: AnchorSettings
    fitness_before: float
    fitness_after: float
    start: str


class _Layout:
    """The values the search changes, as one vector of logs: per-layer scales, aspect ratios, the interpolated
    anchor's ratio (if there is one) and the lowest layer's (scale, ratio) pairs (if it is reduced).

    A reduced lowest layer's boxes replace everything its scale ``s_0`` was used for, so ``s_0`` is not searched;
    the result writes there the smallest of the lowest layer's scales, for a reader of the config."""

    def __init__(self, settings: AnchorSettings, num_layers: int) -> None:
        self.settings, self.num_layers = settings, num_layers
        self.num_ratios = len(settings.aspect_ratios)
        self.interpolated = settings.interpolated_scale_aspect_ratio > 0
        self.reduced = settings.reduce_boxes_in_lowest_layer
        self.num_scales = num_layers - 1 if self.reduced else num_layers

    def encode(self, settings: AnchorSettings) -> np.ndarray:
        scales = settings.layer_scales(self.num_layers)
        parts = [scales[self.num_layers - self.num_scales:], list(settings.aspect_ratios)]
        if self.interpolated:
            parts.append([settings.interpolated_scale_aspect_ratio])
        if self.reduced:
            lowest = box_specs(settings, num_layers=self.num_layers)[0]
            parts.append([v for box in lowest for v in box])
        return np.log(np.array([v for part in parts for v in part], dtype=np.float64))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        kinds = ([0] * self.num_scales + [1] * self.num_ratios + [1] * self.interpolated
                 + [0, 1] * 3 * self.reduced)  # 0: a scale, 1: a ratio
        ranges = np.array([LOG_SCALE_RANGE, LOG_RATIO_RANGE])[kinds]
        return ranges[:, 0], ranges[:, 1]

    def decode(self, vector: np.ndarray) -> AnchorSettings:
        """The settings of ``vector``, rounded to 4 significant digits (what a config file will hold)."""
        values = [float(f"{v:.4g}") for v in np.exp(vector)]
        scales, values = values[:self.num_scales], values[self.num_scales:]
        ratios, values = values[:self.num_ratios], values[self.num_ratios:]
        changes: dict[str, Any] = {"aspect_ratios": tuple(ratios)}
        if self.interpolated:
            changes["interpolated_scale_aspect_ratio"], values = values[0], values[1:]
        if self.reduced:
            lowest = tuple(zip(values[0::2], values[1::2]))
            changes["lowest_layer_boxes"] = lowest
            scales = [min(scale for scale, _ in lowest), *scales]
        return self.settings.replace(scales=tuple(scales), **changes)


def _kmeans_1d(values: np.ndarray, k: int, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """``k`` centres of 1-D ``values`` (Lloyd's algorithm from evenly spaced quantiles: deterministic) and the size
    of each cluster."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        label = np.abs(values[:, None] - centres[None]).argmin(axis=1)  # (B,)
        sums, sizes = np.bincount(label, values, minlength=k), np.bincount(label, minlength=k)
        centres = np.where(sizes > 0, sums / np.maximum(sizes, 1), centres)
    return centres, np.bincount(np.abs(values[:, None] - centres[None]).argmin(axis=1), minlength=k)


def _kmeans_start(layout: _Layout, boxes: Tensor, base: float) -> np.ndarray:
    """Aspect ratios at the k-means centres of the boxes' log aspect ratios (most common first), scales at those
    of their log scales (smallest first, as the layers' strides grow), the interpolated anchor and the lowest layer
    at the most common ratios."""
    size = (boxes[:, 2:] - boxes[:, :2]).double().numpy()
    log_ratio = np.log(size[:, 0] / size[:, 1])
    log_scale = np.log(np.sqrt(size[:, 0] * size[:, 1]) / base)
    ratio_centres, ratio_sizes = _kmeans_1d(log_ratio, layout.num_ratios)
    ratios = ratio_centres[np.argsort(-ratio_sizes, kind="stable")]
    scales = np.sort(_kmeans_1d(log_scale, layout.num_layers)[0])
    parts = [scales[layout.num_layers - layout.num_scales:], ratios]
    if layout.interpolated:
        parts.append(ratios[:1])
    if layout.reduced:
        parts.append(np.stack([np.full(3, scales[0]), np.resize(ratios, 3)], axis=1).reshape(-1))
    low, high = layout.bounds()
    return np.clip(np.concatenate(parts), low, high)


def fit_anchor_settings(boxes: Tensor, settings: AnchorSettings, *, feature_sizes: Sequence[tuple[int, int]],
                        image_size: tuple[int, int], generations: int = 1000, seed: int = 0,
                        max_boxes: int = 20000, iou_threshold: float = 0.5, mutation_prob: float = 0.9,
                        sigma: float = 0.2) -> AnchorFit:
    """Fit the anchor generator's values to ``boxes (B, 4)`` (xyxy input pixels of an ``image_size = (H, W)``
    input whose maps have ``feature_sizes``), starting from ``settings`` (``SSDLite.anchor_settings``).

    The result holds explicit per-layer ``scales`` and, with a reduced lowest layer, ``lowest_layer_boxes``; the
    counts per location (``aspect_ratios``' length, whether there is an interpolated anchor, the reduced lowest
    layer) are those of ``settings``. The search starts from the better of ``settings`` and the k-means start, and
    mutates every value with probability ``mutation_prob`` by a factor ``exp(u * sigma * N(0, 1))``, ``u ~ U(0, 1)``
    per generation (Ultralytics' autoanchor uses sigma 0.1; the larger steps get stuck in a poor local optimum less
    often on thin objects). Deterministic for a ``seed``; at most ``max_boxes`` boxes (a seeded sample) are scored.
    """
    if len(boxes) == 0:
        raise ValueError("fit_anchor_settings: no ground-truth boxes to fit anchors to; the training split has no "
                         "objects")
    rng = np.random.default_rng(seed)
    boxes = boxes.detach().to("cpu", torch.float64)
    if len(boxes) > max_boxes:
        boxes = boxes[torch.from_numpy(np.sort(rng.choice(len(boxes), max_boxes, replace=False)))]
    layout = _Layout(settings, len(feature_sizes))

    size, offsets = boxes[:, 2:] - boxes[:, :2], _cell_offsets(boxes, feature_sizes, image_size)

    def fitness(vector: np.ndarray) -> float:
        specs = box_specs(layout.decode(vector), num_layers=len(feature_sizes))
        best = _best_iou(size, offsets, *_anchor_shapes(specs, image_size, boxes))  # = nearest_anchor_iou
        return float((best >= iou_threshold).double().mean() + best.mean())

    given = layout.encode(settings)
    before = fitness(given)
    start, kmeans = "given", _kmeans_start(layout, boxes, float(min(image_size)))
    vector, best = given, before
    if fitness(kmeans) > before:
        start, vector, best = "k-means", kmeans, fitness(kmeans)
    low, high = layout.bounds()
    for _ in range(generations):
        step = np.zeros_like(vector)
        while not step.any():  # a mutant that changes nothing would only cost a fitness evaluation
            step = (rng.random(len(vector)) < mutation_prob) * rng.random() * rng.standard_normal(len(vector)) * sigma
        candidate = np.clip(vector + step, low, high)
        score = fitness(candidate)
        if score > best:
            vector, best = candidate, score
    fitted = layout.decode(vector) if start != "given" or best > before else settings
    return AnchorFit(settings=fitted, fitness_before=before, fitness_after=best, start=start)
