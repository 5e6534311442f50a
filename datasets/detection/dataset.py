"""What every detection dataset shares: the checked index of images and boxes, loading, collation.

A dataset (COCO in ``coco.py``, VOC in ``voc.py``) turns its annotation format into flat arrays and calls
:func:`build_index`, which runs the set-up check once (missing, unreadable or truncated images, zero-area
boxes, boxes past the edge, unknown categories, sizes that disagree with the file) and keeps the result in a
few numpy arrays: no per-image Python objects, so forked DataLoader workers do not copy the index page by page
as reference counts change.

A batch is ``(images (N, 3, S, S) float32, targets)`` with one dict per image: ``boxes`` (M, 4) float32 xyxy in
input pixels, ``labels`` (M,) int64 in 1..K, ``image_id`` int, ``orig_size`` (2,) int64 ``(height, width)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..checks import DatasetError, DatasetReport
from ..images import image_problem, image_size, load_or_replace, read_rgb

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[Tensor, Tensor, Tensor]]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Annotation tools round coordinates: overshooting the edge by less than a pixel is clipped without a report.
EDGE_TOLERANCE = 1.0


@dataclass(frozen=True)
class DetectionIndex:
    """The checked contents of one split. Boxes of image ``i`` are ``boxes[offsets[i]:offsets[i + 1]]``.

    ``files`` (I,) str, ``image_ids`` (I,) int64, ``sizes`` (I, 2) int64 (H, W) of the file after EXIF rotation,
    ``offsets`` (I + 1,) int64, ``boxes`` (B, 4) float32 xyxy pixels, ``labels`` (B,) int64 in 1..K,
    ``ignore`` (B,) bool: crowd (COCO) or difficult (VOC) boxes, left out of training targets, kept for evaluation.
    """

    files: np.ndarray
    image_ids: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray


def probe_images(files: Sequence[str]) -> list[tuple[str | None, tuple[int, int]]]:
    """``(problem or None, (H, W))`` per file, from headers and tails only; threads overlap the file reads."""

    def probe(path: str) -> tuple[str | None, tuple[int, int]]:
        problem = image_problem(path)
        return (problem, (0, 0)) if problem else (None, image_size(path))

    with ThreadPoolExecutor(max_workers=min(32, 4 * (os.cpu_count() or 1))) as pool:
        return list(pool.map(probe, files, chunksize=64))


def build_index(report: DatasetReport, *, files: Sequence[str], image_ids: np.ndarray, listed_sizes: np.ndarray,
                box_image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, ignore: np.ndarray,
                box_names: np.ndarray,
                probes: list[tuple[str | None, tuple[int, int]]] | None = None) -> DetectionIndex:
    """Check images and boxes, record every problem in ``report`` and return what is usable.

    ``files`` (I,) image paths; ``image_ids`` (I,); ``listed_sizes`` (I, 2) (H, W) as the annotations state
    (0 = not stated); per box: ``box_image`` (B,) index into ``files`` (-1 = unknown image), ``boxes`` (B, 4) xyxy,
    ``labels`` (B,) (0 = unknown category), ``ignore`` (B,) bool, ``box_names`` (B,) how messages name the box.
    ``probes``: :func:`probe_images` of ``files`` when the caller already needed them (YOLO boxes are fractions of
    the image size), so the headers are read once. Broken images are left out (with their boxes); bad boxes are
    dropped or clipped; all counted.
    """
    num_images = len(files)
    if num_images == 0:
        raise DatasetError(f"{report.name}: the annotations list no images; check that the file is the right one")
    probes = probe_images(files) if probes is None else probes
    sizes = np.array([size for _, size in probes], dtype=np.int64).reshape(-1, 2)
    usable = np.ones(num_images, dtype=bool)
    for i, (problem, _) in enumerate(probes):
        if problem:
            usable[i] = False
            report.add(f"{problem.split(' (')[0]} (image skipped)", files[i], problem)
    listed_sizes = np.asarray(listed_sizes, dtype=np.int64).reshape(-1, 2)
    differs = usable & (listed_sizes > 0).all(axis=1) & (listed_sizes != sizes).any(axis=1)
    for i in np.flatnonzero(differs):
        report.add("image size differs from the annotations (file size used)", files[i],
                   f"annotations say HxW {listed_sizes[i, 0]}x{listed_sizes[i, 1]}, "
                   f"file is {sizes[i, 0]}x{sizes[i, 1]}")

    # Box checks over all boxes at once; messages are built only for the boxes that have a problem.
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    box_image = np.asarray(box_image, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    keep = box_image >= 0

    def add(kind: str, mask: np.ndarray, detail: Callable[[int], str]) -> None:
        for r in np.flatnonzero(mask):
            file = files[box_image[r]] if box_image[r] >= 0 else "annotations"
            report.add(kind, file, f"{box_names[r]}{detail(r)}")

    add("box of an image not in the annotations (dropped)", ~keep, lambda r: "")
    keep &= usable[np.maximum(box_image, 0)]
    unknown = keep & (labels <= 0)
    add("unknown category (box dropped)", unknown, lambda r: f", category {labels[r]}")
    keep &= ~unknown
    xyxy = lambda r: f", xyxy {np.round(boxes[r], 1).tolist()}"
    empty = keep & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]) | ~np.isfinite(boxes).all(axis=1))
    add("zero-area box (dropped)", empty, xyxy)
    keep &= ~empty
    limit = sizes[np.maximum(box_image, 0)][:, ::-1].astype(np.float64)  # (B, 2) (W, H) of the box's image
    clipped = np.concatenate([np.clip(boxes[:, :2], 0, limit), np.clip(boxes[:, 2:], 0, limit)], axis=1)
    past = keep & (np.abs(clipped - boxes) > EDGE_TOLERANCE).any(axis=1)
    outside = past & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    on_image = lambda r: f"{xyxy(r)}, image WxH {limit[r, 0]:.0f}x{limit[r, 1]:.0f}"
    add("box outside the image (dropped)", outside, on_image)
    add("box past the image edge (clipped)", past & ~outside, on_image)
    keep &= ~outside & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])

    # Group the kept boxes by image: a stable sort keeps the annotation order within each image.
    old_to_new = np.cumsum(usable) - 1  # (I,) new index of each usable image
    rows = np.flatnonzero(keep)
    rows = rows[np.argsort(box_image[rows], kind="stable")]
    new_image = old_to_new[box_image[rows]]  # (B',) index of each kept box's image among the kept images
    offsets = np.concatenate([[0], np.cumsum(np.bincount(new_image, minlength=int(usable.sum())))]).astype(np.int64)
    ignore = np.asarray(ignore, dtype=bool)[rows]
    trainable = np.bincount(new_image[~ignore], minlength=int(usable.sum()))  # (I',) training boxes per image
    report.counts.update({"images": num_images, "images kept": int(usable.sum()),
                          "without objects": int((trainable == 0).sum()), "boxes": int((~ignore).sum()),
                          "ignored boxes (crowd/difficult)": int(ignore.sum())})
    return DetectionIndex(files=np.asarray(files, dtype=str)[usable],
                          image_ids=np.asarray(image_ids, dtype=np.int64)[usable], sizes=sizes[usable],
                          offsets=offsets, boxes=clipped[rows].astype(np.float32), labels=labels[rows],
                          ignore=ignore)


class DetectionDataset(Dataset):
    """Images and boxes of one split from a checked :class:`DetectionIndex`.

    Item: ``(image, target)``. Without ``transform`` the image is ``(H, W, 3)`` uint8 RGB (EXIF applied) and the
    boxes are in its pixels; with one (see ``transforms.py``) it is ``(3, S, S)`` float32 and boxes are in input
    pixels. ``target``: ``boxes`` (M, 4) float32 xyxy, ``labels`` (M,) int64 in 1..K (crowd / difficult boxes left
    out), ``image_id`` int, ``orig_size`` (2,) int64 (H, W). An image that fails to decode is named in a warning and
    replaced by the next one (:func:`mobilenetv2_dense.datasets.images.load_or_replace`).
    """

    def __init__(self, index: DetectionIndex, *, transform: Transform | None = None) -> None:
        self.index = index
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index.files)

    def __getitem__(self, i: int) -> tuple[Tensor | np.ndarray, dict]:
        return load_or_replace(self.load, i, len(self))

    def load(self, j: int) -> tuple[Tensor | np.ndarray, dict]:
        return self.sample(j, read_rgb(self.index.files[j]))

    def resized_boxes(self, image_size: tuple[int, int]) -> list[Tensor]:
        """The training boxes of every image (crowd / difficult ones left out), ``(M_i, 4)`` float32 xyxy in the
        pixels of the image resized to ``image_size = (H, W)`` as the evaluation transform does (no augmentation):
        the boxes the network sees, from the index alone, so no image is decoded."""
        index = self.index
        height, width = image_size
        counts = np.diff(index.offsets)
        box_image = np.repeat(np.arange(len(counts)), counts)  # (B,) image of each box
        # (I, 4) x, y, x, y factors of each image, taken to each box
        factors = np.array([width, height, width, height], dtype=np.float64) / index.sizes[:, [1, 0, 1, 0]]
        keep = ~index.ignore
        boxes = (index.boxes * factors[box_image])[keep].astype(np.float32)
        return list(torch.from_numpy(boxes).split(np.bincount(box_image[keep], minlength=len(counts)).tolist()))

    def training_boxes(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """``boxes (M, 4)`` float32 xyxy and ``labels (M,)`` int64 of image ``j`` in its pixels, crowd / difficult
        boxes left out (views into the index: copy before changing them)."""
        index = self.index
        start, stop = index.offsets[j], index.offsets[j + 1]
        train = ~index.ignore[start:stop]
        return index.boxes[start:stop][train], index.labels[start:stop][train]

    def sample(self, j: int, image: np.ndarray) -> tuple[Tensor | np.ndarray, dict]:
        boxes, labels = self.training_boxes(j)
        target = {"image_id": int(self.index.image_ids[j]),
                  "orig_size": torch.as_tensor(image.shape[:2], dtype=torch.int64)}
        if self.transform is None:
            return image, {"boxes": torch.from_numpy(boxes.copy()), "labels": torch.from_numpy(labels.copy()), **target}
        image, boxes, labels = self.transform(image, boxes, labels)
        return image, {"boxes": boxes, "labels": labels, **target}


def detection_collate(batch: list[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """``[(image (3, S, S), target), ...] -> (images (N, 3, S, S), [target, ...])``: images stacked, targets kept
    as a list because images hold different numbers of boxes."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
