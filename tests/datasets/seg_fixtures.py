"""Tiny VOC / SBD trees on disk for the segmentation data tests (plain helpers; the tests own their fixtures).

The VOC tree comes from ``write_shapes_voc``; the SBD trees are written the way the real releases are:
``dataset/cls/*.mat`` holding a ``GTcls`` struct (``Segmentation``, ``Boundaries``, ``CategoriesPresent``), and
the converted ``SegmentationClassAug/*.png`` grayscale masks with a ``train_aug.txt`` list.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from mobilenetv2_dense.datasets.segmentation.shapes import label_map, write_shapes_voc
from mobilenetv2_dense.datasets.segmentation.voc import read_list
from mobilenetv2_dense.datasets.synthetic import render_scene

NUM_TRAIN, NUM_VAL = 6, 3
SBD_ONLY = ("sbd_000000", "sbd_000001", "sbd_000002")


def voc_names(voc: Path, split: str) -> list[str]:
    return read_list(voc / "ImageSets" / "Segmentation" / f"{split}.txt")


def sbd_mask(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A scene and its SBD-style mask (no void border: SBD has none)."""
    rng = np.random.default_rng(seed)
    objects = []
    while not objects:
        image, objects = render_scene(rng, height, width, max_objects=3, min_size=0.3, max_size=0.6)
    return image, label_map(height, width, objects, void_width=0)


def write_mat(path: Path, segmentation: np.ndarray) -> None:
    """An SBD ``cls/*.mat``: struct ``GTcls`` with per-class sparse boundaries and the classes present."""
    present = np.unique(segmentation[(segmentation > 0) & (segmentation < 255)])
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix(segmentation.shape, dtype=np.uint8)
    gt = {"Segmentation": segmentation.astype(np.uint8), "Boundaries": boundaries,
          "CategoriesPresent": present.astype(np.uint8).reshape(-1, 1)}
    scipy.io.savemat(path, {"GTcls": gt})


def sbd_split(voc: Path) -> tuple[list[str], list[str]]:
    """SBD train / val lists: two VOC train names, two VOC val names (to be removed), the SBD-only names."""
    train, val = voc_names(voc, "train"), voc_names(voc, "val")
    return [train[0], val[0], SBD_ONLY[0], SBD_ONLY[1]], [train[1], val[1], SBD_ONLY[2]]


def sbd_masks(voc: Path) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
    """name -> (image or None when VOC has it, SBD mask). VOC names get their VOC mask with the void cleared."""
    out = {}
    for i, name in enumerate(n for split in sbd_split(voc) for n in split):
        if name.startswith("sbd_"):
            out[name] = sbd_mask(40 + 4 * i, 52, seed=100 + i)
        else:
            mask = np.array(Image.open(voc / "SegmentationClass" / f"{name}.png"))
            out[name] = (None, np.where(mask == 255, 0, mask).astype(np.uint8))
    return out


def write_sbd_release(root: Path, voc: Path) -> Path:
    """``root/benchmark_RELEASE/dataset/{cls, img, train.txt, val.txt}``; SBD-only images live in ``img``."""
    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    (dataset / "img").mkdir()
    for name, (image, mask) in sbd_masks(voc).items():
        write_mat(dataset / "cls" / f"{name}.mat", mask)
        source = voc / "JPEGImages" / f"{name}.jpg"
        if image is None:
            shutil.copy(source, dataset / "img" / f"{name}.jpg")
        else:
            Image.fromarray(image).save(dataset / "img" / f"{name}.jpg")
    train, val = sbd_split(voc)
    (dataset / "train.txt").write_text("\n".join(train) + "\n")
    (dataset / "val.txt").write_text("\n".join(val) + "\n")
    return dataset


def write_segmentation_class_aug(voc: Path, *, line_style: str, list_place: str) -> None:
    """``VOC2012/SegmentationClassAug/*.png`` (grayscale) + a train_aug list, as the common conversion ships it.

    The converted set also holds the VOC val masks: loaders must take them out. SBD-only images are put in
    ``JPEGImages`` (the real VOC2012 ``JPEGImages`` holds every SBD image).
    """
    aug = voc / "SegmentationClassAug"
    aug.mkdir()
    names = []
    for name, (image, mask) in sbd_masks(voc).items():
        Image.fromarray(mask, mode="L").save(aug / f"{name}.png")
        if image is not None:
            Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg")
        names.append(name)
    lines = names if line_style == "name" else [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in names]
    target = voc / "ImageSets" / "Segmentation" if list_place == "imagesets" else voc
    target = target / "train_aug.txt"
    target.write_text("\n".join(lines) + "\n")


def write_tiny_voc(root: Path) -> Path:
    """A VOC tree of ``NUM_TRAIN`` + ``NUM_VAL`` scenes of 40..64 px under ``root/VOCdevkit/VOC2012``; returns root."""
    write_shapes_voc(root, num_train=NUM_TRAIN, num_val=NUM_VAL, image_size=(40, 64), seed=3)
    return root
