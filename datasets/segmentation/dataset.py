"""VOC-layout segmentation datasets and the batch contract (``segmentation_collate``).

A train / val / test batch is ``(images (N, 3, H, W) float32 normalised, masks (N, H, W) int64, sizes)``, labels
0..K-1 and 255 = void, ``sizes`` each image's ``(h, w)``. Evaluation batches are padded to the largest image
(images with 0 = the mean after normalisation, masks with 255); the task runs each image at its own size (the
top-left ``(h, w)`` crop), so neither scores nor predictions depend on which images share a batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..checks import DatasetReport
from ..images import load_or_replace, read_rgb
from .voc import IGNORE_INDEX, MaskReader, Sample, check_samples, read_mask

_FIX = "Remove or replace these files, or pass strict=False to skip them."


def segmentation_collate(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
    """Stack ``(image (3, h, w), mask (h, w))`` samples into ``(N, 3, H, W)`` float and ``(N, H, W)`` int64,
    H and W the largest in the batch, plus each sample's ``(h, w)``; padding at the bottom and right is 0 in
    images and 255 in masks."""
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    images = batch[0][0].new_zeros((len(batch), 3, height, width))
    masks = torch.full((len(batch), height, width), IGNORE_INDEX, dtype=torch.int64)
    for i, (image, mask) in enumerate(batch):  # one copy per sample; the pixels move as whole blocks
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks, [tuple(image.shape[-2:]) for image, _ in batch]


def predict_collate(batch: Sequence[tuple[Tensor, str]]) -> dict:
    """``{"images": (N, 3, H, W) padded with 0, "paths": list[str], "sizes": list[(h, w)]}``."""
    images, _, sizes = segmentation_collate([(image, torch.zeros(image.shape[-2:], dtype=torch.int64))
                                             for image, _ in batch])
    return {"images": images, "paths": [p for _, p in batch], "sizes": sizes}


@dataclass(frozen=True)
class SampleTable:
    """A split's ``(name, image, mask)`` paths as three ``(I,)`` numpy string arrays; ``table[i]`` is a
    :class:`Sample` built on the spot.

    Forked DataLoader workers share the main process's memory until a page is written, and reading a Python
    object writes its reference count: a list of per-sample objects is copied into every worker page by page as
    the epochs visit it (https://github.com/pytorch/pytorch/issues/13246). Three arrays are three objects, so
    the paths stay shared however often they are read (as the detection index does).
    """

    names: np.ndarray
    images: np.ndarray
    masks: np.ndarray

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> SampleTable:
        return cls(*(np.array([getattr(s, key) for s in samples], dtype=str) for key in ("name", "image", "mask")))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sample:
        return Sample(str(self.names[i]), str(self.images[i]), str(self.masks[i]))

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))


class SegmentationDataset(Dataset):
    """Checked ``(image, mask)`` file pairs as ``(image (3, H, W) float, mask (H, W) int64)`` after ``transform``.

    ``samples`` is kept as a :class:`SampleTable` (no Python object per sample for the loader workers to copy).
    Construction runs the set-up check (:func:`mobilenetv2_dense.datasets.segmentation.voc.check_samples`):
    missing, unreadable or truncated files, masks of the wrong size, labels outside ``0..num_classes-1`` and 255,
    RGB masks with colours outside the VOC palette (or the dataset's colour table). One summary is printed; bad
    samples are skipped with a warning, or ``strict=True`` raises
    :class:`mobilenetv2_dense.datasets.checks.DatasetError` naming the files. A file that still fails to decode later
    is replaced by the next sample with a warning naming it (:func:`mobilenetv2_dense.datasets.images.load_or_replace`).

    Args:
        read_mask: path -> ``((H, W) uint8 labels, converted from colours)``: VOC's
            :func:`~mobilenetv2_dense.datasets.segmentation.voc.read_mask`, or a dataset's
            :class:`~mobilenetv2_dense.datasets.segmentation.masks.MaskDecoder`.
        report: the summary to add the check's problems to (pairing problems a layout found before), printed even
            with ``check=False``; ``None``: a new one called ``name``.
    """

    def __init__(self, samples: list[Sample], transform: A.Compose, *, num_classes: int, name: str,
                 strict: bool = False, check: bool = True, counts: dict[str, int] | None = None,
                 read_mask: MaskReader = read_mask, report: DatasetReport | None = None) -> None:
        found_before = report is not None and bool(report)
        report = DatasetReport(name) if report is None else report
        report.counts.update(counts or {})
        kept = samples
        if check:
            note = getattr(read_mask, "converted_note", "RGB masks converted through the VOC palette")
            kept = check_samples(samples, num_classes=num_classes, report=report, read=read_mask, converted_note=note)
        if check or found_before:
            report.finish(strict, fix=_FIX)
        self.samples = SampleTable.of(kept)
        if not len(self.samples):
            raise ValueError(f"{name}: no usable samples left out of {len(samples)}; see the summary above")
        self.transform = transform
        self.read_mask = read_mask

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return load_or_replace(self.load, index, len(self))

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        sample = self.samples[index]
        image, (mask, _) = read_rgb(sample.image), self.read_mask(sample.mask)
        out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"].long()
