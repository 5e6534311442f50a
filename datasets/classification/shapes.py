"""A generated classification dataset in the ImageNet folder layout, for demos and tests.

``write_image_folder`` draws one large shape per image with
:func:`mobilenetv2_dense.datasets.synthetic.render_scene` and writes ``{train,val}/<class>/*.jpg``; the folder
dataset then reads it back exactly as it reads ImageNet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mobilenetv2_dense.datasets.synthetic import SHAPE_CLASSES, render_scene


def write_image_folder(root: str | Path, *, images_per_class: int = 60, val_fraction: float = 0.25,
                       image_size: int = 96, seed: int = 0) -> Path:
    """Write an ImageNet-layout dataset (``{train,val}/<class>/*.jpg``) of one shape per image."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_val = int(round(images_per_class * val_fraction))
    for label, name in enumerate(SHAPE_CLASSES, start=1):
        for i in range(images_per_class):
            split = "val" if i < n_val else "train"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            image = _single_shape(rng, image_size, label)
            Image.fromarray(image).save(folder / f"{name}_{i:04d}.jpg", quality=92)
    return root


def _single_shape(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """A scene holding one large shape of class ``label`` (rejection sampling keeps backgrounds alike)."""
    while True:
        image, objects = render_scene(rng, size, size, max_objects=1, min_size=0.4, max_size=0.8)
        if objects and objects[0].label == label:
            return image
