"""A generated classification dataset in the ImageNet folder layout, for demos and tests.

``write_image_folder`` draws one shape per image with :func:`shape_image` and writes ``{train,val}/<class>/*.jpg``;
the folder dataset then reads it back exactly as it reads ImageNet.

The set is built so that only the *shape* tells the classes apart, and so that the shape is always there to see:

- colour, background, position, rotation and size are drawn the same way for every class;
- the shape's area (not its radius) is drawn, so a circle and a triangle cover as many pixels: the fraction of
  shape pixels, and with it the mean colour of an image, says nothing about the class;
- the shape lies wholly inside the evaluation centre crop (``transforms.py`` cuts 1/16 of each side), and its
  luminance differs from the background's by at least ``MIN_CONTRAST``, so no image is unreadable.

The detection scenes (:func:`mobilenetv2_dense.datasets.synthetic.render_scene`, this set's source until
``GENERATOR`` 2) make a poorer classification set: a shape may lie half outside the frame, and its colour is drawn
with no regard to a background that spans two random colours. Both draw the same four outlines
(``synthetic._polygon``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..synthetic import SHAPE_CLASSES, _polygon

GENERATOR = "shapes_classification/2"  # changes whenever the same settings would draw other images
MARKER = ".complete"  # written last, as JSON: the generator and its settings; its absence means half-written
# Shape area as a fraction of the image. At 0.24 a triangle's circumradius is 0.43 of the side, and the margin
# below leaves at most 1/2 - 1/16 = 0.4375: the largest that fits. Smaller shapes took MobileNetV2 longer to learn.
AREA_RANGE = (0.10, 0.24)
MIN_CONTRAST = 60.0  # |luminance of the shape - mean luminance of the background|, in 0..255
SUPERSAMPLE = 4  # shapes are drawn at 4x and reduced: anti-aliased edges, as a camera sees them
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


def _unit_area(label: int) -> float:
    """The area of shape ``label`` (1-based) of circumradius 1 (shoelace formula on its outline)."""
    polygon = _polygon(label, 0.0, 0.0, 1.0, 0.0)
    if polygon is None:
        return float(np.pi)
    x, y = np.array(polygon).T
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(S, S, 3)`` float: a gentle gradient around a random colour, with stripes on some images."""
    c0 = rng.uniform(0, 255, size=3)
    c1 = np.clip(c0 + rng.uniform(-40, 40, size=3), 0, 255)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = ((np.cos(angle) * xx + np.sin(angle) * yy) / np.sqrt(2) + 0.5)[..., None]
    image = c0 * (1 - t) + c1 * t
    if rng.random() < 0.3:  # straight edges that are not the object's
        period, along = rng.uniform(0.1, 0.3) * size, xx if rng.random() < 0.5 else yy
        image = image + 12 * np.sign(np.sin(2 * np.pi * along * size / period))[..., None]
    return image


def shape_image(rng: np.random.Generator, size: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    """One shape of class ``label`` (1-based index into ``SHAPE_CLASSES``) on a background.

    Returns the ``(S, S, 3)`` uint8 image and the ``(S, S)`` bool mask of the shape's pixels (coverage >= 1/2).
    """
    if not 1 <= label <= len(SHAPE_CLASSES):
        raise ValueError(f"label must be 1..{len(SHAPE_CLASSES)} (an index into {SHAPE_CLASSES} from 1), got {label}")
    background = _background(rng, size)
    r = size * np.sqrt(rng.uniform(*AREA_RANGE) / _unit_area(label))
    margin = size / 16 + r  # the whole circumcircle stays inside the evaluation centre crop
    cx, cy = rng.uniform(margin, size - margin, size=2)
    # Drawn at SUPERSAMPLE x and box-filtered down: alpha is the fraction of each pixel the shape covers.
    big, (bx, by, br) = size * SUPERSAMPLE, (v * SUPERSAMPLE for v in (cx, cy, r))
    canvas = Image.new("L", (big, big))
    polygon = _polygon(label, bx, by, br, rng.uniform(0, 2 * np.pi))
    if polygon is None:
        ImageDraw.Draw(canvas).ellipse((bx - br, by - br, bx + br, by + br), fill=255)
    else:
        ImageDraw.Draw(canvas).polygon(polygon, fill=255)
    alpha = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float64)[..., None] / 255
    ground = float(background.reshape(-1, 3).mean(0) @ _LUMA)
    while True:  # any hue, but never camouflaged
        colour = rng.uniform(0, 255, size=3)
        if abs(colour @ _LUMA - ground) >= MIN_CONTRAST:
            break
    image = background * (1 - alpha) + colour * alpha
    if rng.random() < 0.5:  # sensor noise over shape and background alike
        image = image + rng.normal(0, 8, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), alpha[..., 0] >= 0.5


def write_image_folder(root: str | Path, *, images_per_class: int = 60, val_fraction: float = 0.25,
                       image_size: int = 96, seed: int = 0) -> Path:
    """Write an ImageNet-layout dataset (``{train,val}/<class>/<class>_NNNN.jpg``) of one shape per image.

    The first ``round(images_per_class * val_fraction)`` images of each class go to ``val``; the same ``seed``
    writes the same files. Class folders left by an earlier write (a ``MARKER`` file says so) are replaced, so no
    image of another generator or size stays behind. ``MARKER`` is written last (:func:`written_settings`).
    """
    root = Path(root)
    if (root / MARKER).exists():
        (root / MARKER).unlink()
        for folder in (root / split / name for split in ("train", "val") for name in SHAPE_CLASSES):
            shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(seed)
    n_val = int(round(images_per_class * val_fraction))
    for label, name in enumerate(SHAPE_CLASSES, start=1):
        for i in range(images_per_class):
            folder = root / ("val" if i < n_val else "train") / name
            folder.mkdir(parents=True, exist_ok=True)
            image, _ = shape_image(rng, image_size, label)
            Image.fromarray(image).save(folder / f"{name}_{i:04d}.jpg", quality=92)
    settings = {"generator": GENERATOR, "images_per_class": images_per_class, "val_fraction": val_fraction,
                "image_size": image_size, "seed": seed}
    (root / MARKER).write_text(json.dumps(settings) + "\n")
    return root


def written_settings(root: str | Path) -> dict | None:
    """The settings ``MARKER`` records under ``root`` (``{"generator": ..., "images_per_class": ...}``); ``{}`` for
    a marker of an older generator (plain text), ``None`` when there is no marker (nothing, or half, written)."""
    path = Path(root) / MARKER
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}
