"""Generated scenes for demos and tests: coloured shapes on textured backgrounds.

Nothing here is a data loader. The ``shapes`` modules of ``datasets.classification``, ``datasets.detection`` and
``datasets.segmentation`` put the scenes on disk in a real dataset format (an ImageNet-style folder, COCO JSON,
the VOC layout), and the real loaders read them back, so the demo exercises exactly the code a user's dataset
goes through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")


@dataclass
class SceneObject:
    """One drawn shape: ``label`` indexes ``SHAPE_CLASSES`` from 1; ``box`` is ``(x0, y0, x1, y1)`` in pixels;
    ``mask`` is ``(H, W)`` bool, the pixels of the shape left visible by the shapes drawn after it."""

    label: int
    box: tuple[float, float, float, float]
    mask: np.ndarray


def _background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A random linear gradient between two colours, with stripes or noise on half the images."""
    c0, c1 = rng.integers(0, 256, size=(2, 3))
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1) / 2
    image = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.float32)
    if rng.random() < 0.3:
        period = rng.uniform(8, 32)
        image += 25 * np.sign(np.sin(2 * np.pi * (xx if rng.random() < 0.5 else yy) / period))[..., None]
    if rng.random() < 0.5:
        image += 12 * rng.standard_normal(size=image.shape, dtype=np.float32)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def _polygon(label: int, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]] | None:
    if label == 2:  # square
        corners = [np.pi / 4 + k * np.pi / 2 for k in range(4)]
        return [(cx + r * np.cos(a + angle), cy + r * np.sin(a + angle)) for a in corners]
    if label == 3:  # triangle
        return [(cx + r * np.cos(a + angle), cy + r * np.sin(a + angle)) for a in
                (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
    if label == 4:  # cross: a plus sign of arm width r / 2.5
        w = r / 2.5
        pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w),
               (-w, -w)]
        c, s = np.cos(angle), np.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    return None  # circle


def render_scene(rng: np.random.Generator, height: int, width: int, *, max_objects: int = 4,
                 min_size: float = 0.08, max_size: float = 0.45,
                 elongation: tuple[float, float] | None = None) -> tuple[np.ndarray, list[SceneObject]]:
    """Draw 0..``max_objects`` shapes (sizes ``min_size``..``max_size`` of the short side) on a background.

    ``elongation = (lo, hi)`` squeezes every shape along x or y (half each) by a factor drawn in ``[lo, hi]``, so
    its box is 1:lo..1:hi (rods, bars and needles, far from the near-square COCO-like default); ``None`` draws
    exactly the scenes it always drew (the extra random numbers are drawn only when it is set).
    Returns the ``(H, W, 3)`` uint8 image and the visible objects; shapes overlap little (IoU < 0.3).
    """
    image = _background(rng, height, width)
    draw = ImageDraw.Draw(image)
    objects: list[SceneObject] = []
    short = min(height, width)
    for _ in range(int(rng.integers(0, max_objects + 1)) if max_objects else 0):
        label = int(rng.integers(1, len(SHAPE_CLASSES) + 1))
        r = rng.uniform(min_size, max_size) * short / 2
        cx, cy = rng.uniform(r * 0.5, width - r * 0.5), rng.uniform(r * 0.5, height - r * 0.5)
        polygon = _polygon(label, cx, cy, r, rng.uniform(0, np.pi / 2))
        rx = ry = 1.0  # squeeze of x and y about the centre
        if elongation is not None:
            squeeze = 1.0 / rng.uniform(*elongation)
            rx, ry = (squeeze, 1.0) if rng.random() < 0.5 else (1.0, squeeze)
            if polygon is not None:
                polygon = [(cx + (x - cx) * rx, cy + (y - cy) * ry) for x, y in polygon]
        mask_image = Image.new("1", (width, height))
        mask_draw = ImageDraw.Draw(mask_image)
        if polygon is None:
            mask_draw.ellipse((cx - r * rx, cy - r * ry, cx + r * rx, cy + r * ry), fill=1)
        else:
            mask_draw.polygon(polygon, fill=1)
        mask = np.array(mask_image, dtype=bool)
        ys, xs = np.nonzero(mask)
        if len(xs) < 16:
            continue
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        if any(_iou(box, o.box) > 0.3 for o in objects):
            continue
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.bitmap((0, 0), mask_image, fill=colour)
        for other in objects:
            other.mask &= ~mask
        objects.append(SceneObject(label=label, box=box, mask=mask))
    return np.asarray(image), [o for o in objects if o.mask.sum() >= 16]


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
