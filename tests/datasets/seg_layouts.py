"""Tiny segmentation sets written in the real layouts: image / mask folders (index or colour masks), Cityscapes
(``leftImg8bit`` + ``gtFine`` labelIds, with the sibling files the release has) and ADE20K SceneParsing
(``ADEChallengeData2016``). Plain helpers; the tests own their fixtures.

Every scene is a gray image with two solid rectangles whose mask labels are known, so a test can check a label
read back against the colour it was drawn with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Colour masks: class k is drawn with FOLDER_COLOURS[k], unlabelled pixels with VOID_COLOUR.
FOLDER_CLASSES = ["background", "road", "car"]
FOLDER_COLOURS = [(0, 0, 0), (128, 64, 128), (0, 0, 142)]
VOID_COLOUR = (255, 255, 255)


def scene(height: int, width: int, seed: int, values: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(image (H, W, 3) uint8, mask (H, W) uint8)``: ``values[0]`` everywhere in the mask, ``values[1]`` and
    ``values[2]`` on two rectangles placed by ``seed``, a 2-pixel border of ``values[0]``."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 100, dtype=np.uint8)
    mask = np.full((height, width), values[0], dtype=np.uint8)
    for k, colour in ((1, (230, 40, 40)), (2, (40, 40, 230))):
        y0, x0 = int(rng.integers(2, height // 2)), int(rng.integers(2, width // 2))
        y1, x1 = y0 + height // 3, x0 + width // 3
        image[y0:y1, x0:x1] = colour
        mask[y0:y1, x0:x1] = values[k]
    return image, mask


def write_folder_set(root: Path, *, num_train: int = 4, num_val: int = 2, colour: bool = False,
                     size: tuple[int, int] = (40, 56)) -> Path:
    """``root/{images,masks}/{train,val}/scene_<i>.{jpg,png}``: index masks (palette-free grayscale, values 0..2,
    255 on a 2-pixel band at the top) or, with ``colour``, RGB masks in :data:`FOLDER_COLOURS` with the band in
    :data:`VOID_COLOUR`; a ``classes.txt`` beside. Val images are 4 pixels wider (other sizes than training)."""
    for split, count, offset in (("train", num_train, 0), ("val", num_val, 100)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            height, width = size[0], size[1] + (4 * (i + 1) if split == "val" else 0)
            image, mask = scene(height, width, offset + i, (0, 1, 2))
            mask[:2] = 255
            Image.fromarray(image).save(root / "images" / split / f"scene_{i}.jpg", quality=95)
            if colour:
                table = np.zeros((256, 3), dtype=np.uint8)
                table[: len(FOLDER_COLOURS)] = FOLDER_COLOURS
                table[255] = VOID_COLOUR
                Image.fromarray(table[mask]).save(root / "masks" / split / f"scene_{i}.png")
            else:
                Image.fromarray(mask, mode="L").save(root / "masks" / split / f"scene_{i}.png")
    (root / "classes.txt").write_text("\n".join(FOLDER_CLASSES) + "\n")
    return root


# Cityscapes ids drawn: 7 road (train 0), 26 car (train 13), 24 person (train 11); 0 unlabeled and 29 caravan (void)
# on the border bands.
CITYSCAPES_IDS = (7, 26, 24)


def write_cityscapes(root: Path, *, cities: dict[str, tuple[str, ...]] | None = None,
                     size: tuple[int, int] = (32, 64)) -> Path:
    """``root/{leftImg8bit,gtFine}/<split>/<city>/<city>_000000_<frame>_{leftImg8bit,gtFine_labelIds}.png`` plus the
    ``gtFine_color.png`` / ``gtFine_instanceIds.png`` / ``gtFine_polygons.json`` siblings of the release, 2:1 images
    as the real 2048x1024 ones. Returns ``root``."""
    cities = cities or {"train": ("aachen", "bochum"), "val": ("frankfurt",)}
    for split, names in cities.items():
        for c, city in enumerate(names):
            images, masks = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            images.mkdir(parents=True)
            masks.mkdir(parents=True)
            for frame in range(2):
                stem = f"{city}_000000_{frame:06d}"
                image, mask = scene(*size, seed=10 * c + frame + (50 if split == "val" else 0), values=CITYSCAPES_IDS)
                mask[:2], mask[-2:] = 0, 29  # unlabeled at the top, caravan at the bottom: both void
                Image.fromarray(image).save(images / f"{stem}_leftImg8bit.png")
                Image.fromarray(mask, mode="L").save(masks / f"{stem}_gtFine_labelIds.png")
                Image.fromarray(mask, mode="L").save(masks / f"{stem}_gtFine_instanceIds.png")
                Image.fromarray(np.dstack([mask] * 3)).save(masks / f"{stem}_gtFine_color.png")
                (masks / f"{stem}_gtFine_polygons.json").write_text("{}")
    return root


# ADE20K values drawn: 0 (other), 1 wall, 150 flag.
ADE_VALUES = (0, 1, 150)


def write_ade20k(root: Path, *, num_train: int = 4, num_val: int = 2) -> Path:
    """``root/ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_{train,val}_<8 digits>.{jpg,png}``
    with images of varied sizes (as ADE's). Returns ``root``."""
    ade = root / "ADEChallengeData2016"
    for split, prefix, count in (("training", "train", num_train), ("validation", "val", num_val)):
        (ade / "images" / split).mkdir(parents=True)
        (ade / "annotations" / split).mkdir(parents=True)
        for i in range(count):
            image, mask = scene(36 + 4 * i, 48 + 2 * i, seed=i + (50 if prefix == "val" else 0), values=ADE_VALUES)
            name = f"ADE_{prefix}_{i + 1:08d}"
            Image.fromarray(image).save(ade / "images" / split / f"{name}.jpg", quality=95)
            Image.fromarray(mask, mode="L").save(ade / "annotations" / split / f"{name}.png")
    return root
