"""VOC segmentation datasets, the batch contract (``segmentation_collate``) and the Lightning data module.

A train / val / test batch is ``(images (N, 3, H, W) float32 normalised, masks (N, H, W) int64, sizes)``, labels
0..K-1 and 255 = void, ``sizes`` each image's ``(h, w)``. Evaluation batches are padded to the largest image
(images with 0 = the mean after normalisation, masks with 255); the task runs each image at its own size (the
top-left ``(h, w)`` crop), so neither scores nor predictions depend on which images share a batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import albumentations as A
import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from mobilenetv2_dense.tasks.checks import DatasetReport
from mobilenetv2_dense.tasks.images import ImageReadError, image_problem, read_rgb
from mobilenetv2_dense.tasks.seeding import seeded_loader
from mobilenetv2_dense.tasks.segmentation.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transforms,
    train_transforms,
)
from mobilenetv2_dense.tasks.segmentation.voc import (
    IGNORE_INDEX,
    VOC_CLASSES,
    VOC_PALETTE,
    Sample,
    check_samples,
    find_sbd,
    find_voc2012,
    read_list,
    read_mask,
    remove_names,
    trainaug_samples,
    voc_samples,
)

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


class SegmentationDataset(Dataset):
    """Checked ``(image, mask)`` file pairs as ``(image (3, H, W) float, mask (H, W) int64)`` after ``transform``.

    Construction runs the set-up check (:func:`mobilenetv2_dense.tasks.segmentation.voc.check_samples`): missing,
    unreadable or
    truncated files, masks of the wrong size, labels outside ``0..num_classes-1`` and 255, RGB masks with
    colours outside the VOC palette. One summary is printed; bad samples are skipped with a warning, or
    ``strict=True`` raises :class:`mobilenetv2_dense.tasks.checks.DatasetError` naming the files. A file that still
    fails to
    decode later is replaced by the next sample with a warning naming it.
    """

    def __init__(self, samples: list[Sample], transform: A.Compose, *, num_classes: int, name: str,
                 strict: bool = False, check: bool = True, counts: dict[str, int] | None = None) -> None:
        self.samples = samples
        if check:
            report = DatasetReport(name)
            report.counts.update(counts or {})
            self.samples = check_samples(samples, num_classes=num_classes, report=report)
            report.finish(strict, fix=_FIX)
        if not self.samples:
            raise ValueError(f"{name}: no usable samples left out of {len(samples)}; see the summary above")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        for offset in range(len(self.samples)):
            sample = self.samples[(index + offset) % len(self.samples)]
            try:
                image, (mask, _) = read_rgb(sample.image), read_mask(sample.mask)
            except ImageReadError as error:
                warnings.warn(f"{error}; using the next sample instead", stacklevel=2)
                continue
            out = self.transform(image=image, mask=mask)
            return out["image"], out["mask"].long()
        raise RuntimeError(f"no sample could be decoded (first: {self.samples[0].image!r})")


class ImageFolderPredictDataset(Dataset):
    """Every image under ``folder`` (sorted, recursive) as ``(image (3, H, W) float, path)`` for ``predict``."""

    def __init__(self, folder: str | Path, transform: A.Compose) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"predict_images folder {str(folder)!r} does not exist; set data.predict_images")
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
        report = DatasetReport(f"predict images {folder}")
        self.paths = []
        for path in paths:
            problem = image_problem(path)
            if problem:
                report.add(f"{problem.split(' ')[0]} images", str(path), problem)
            else:
                self.paths.append(str(path))
        report.counts = {"images kept": len(self.paths)}
        report.finish(strict=False)
        if not self.paths:
            raise ValueError(f"no usable images ({', '.join(IMG_EXTENSIONS)}) under {str(folder)!r}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        return self.transform(image=read_rgb(self.paths[index]))["image"], self.paths[index]


class VOCSegmentationDataModule(L.LightningDataModule):
    """PASCAL VOC 2012 segmentation: train on ``train`` or ``trainaug`` (with SBD), validate and test on ``val``.

    Args:
        root: folder holding ``VOCdevkit/VOC2012`` (or the ``VOC2012`` folder itself).
        sbd_root: SBD for ``trainaug``: the original release (``dataset/cls/*.mat``) or a folder with the converted
            ``SegmentationClassAug/*.png`` (+ ``train_aug.txt``); ``None`` looks beside VOC.
        train_split: ``"trainaug"`` (10,582 images: SBD train+val + VOC train, minus VOC val) or ``"train"``
            (1,464). The val images are always removed from the training list.
        crop_size: square training crop (DeepLab: 513; 512 here).
        scale_range: random scale factors for training.
        batch_size / val_batch_size: training batch (>= 12 for good BN statistics) / full-resolution evaluation.
        strict: stop at set-up on any bad sample instead of skipping it with a warning.
        persistent_workers: keep loader workers across epochs (saves their start-up; resuming is then not exact,
            see ``tasks/seeding.py``).
        predict_images: a folder of images for ``predict``.
    """

    def __init__(self, root: str = "data/voc", *, sbd_root: str | None = None,
                 train_split: Literal["train", "trainaug"] = "trainaug", crop_size: int = 512,
                 scale_range: tuple[float, float] = (0.5, 2.0), batch_size: int = 16, val_batch_size: int = 4,
                 num_workers: int = 4, mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD, strict: bool = False, check: bool = True,
                 persistent_workers: bool = False, predict_images: str | None = None) -> None:
        super().__init__()
        if train_split not in ("train", "trainaug"):
            raise ValueError(f"train_split={train_split!r}; use 'train' or 'trainaug'")
        self.root, self.sbd_root, self.train_split = Path(root), sbd_root, train_split
        self.crop_size, self.scale_range = crop_size, tuple(scale_range)
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        self.mean, self.std, self.strict, self.check = tuple(mean), tuple(std), strict, check
        self.predict_images, self.persistent_workers = predict_images, persistent_workers
        self.train_set: SegmentationDataset | None = None
        self.val_set: SegmentationDataset | None = None
        self.predict_set: ImageFolderPredictDataset | None = None

    class_names: tuple[str, ...] = VOC_CLASSES

    @property
    def num_classes(self) -> int:
        """K, background included (21 for VOC)."""
        return len(self.class_names)

    @property
    def palette(self) -> np.ndarray:
        """``(256, 3)`` uint8 VOC colour map for writing palette PNGs (index 255 = void)."""
        return VOC_PALETTE

    def prepare_data(self) -> None:
        if self.trainer is not None and self.trainer.predicting:
            return  # predict reads only predict_images
        find_voc2012(self.root)  # fail before any worker starts, with the expected layout in the message

    def train_samples(self) -> tuple[list[Sample], int]:
        """The training list before the set-up check, and how many val images were removed from it."""
        voc_dir = find_voc2012(self.root)
        if self.train_split == "trainaug":
            sbd = find_sbd(self.sbd_root, voc_dir)
            print(f"trainaug: VOC train + {len(sbd.names)} SBD names from {sbd.description}")
            samples = trainaug_samples(voc_dir, sbd)
        else:
            samples = voc_samples(voc_dir, "train")
        val_names = read_list(voc_dir / "ImageSets" / "Segmentation" / "val.txt")
        samples, removed = remove_names(samples, val_names)
        print(f"{self.train_split}: removed {removed} images of the val list from the training list "
              f"({len(samples)} left)")
        return samples, removed

    def setup(self, stage: str) -> None:
        voc_dir = find_voc2012(self.root) if stage != "predict" else None
        if stage == "fit" and self.train_set is None:
            samples, removed = self.train_samples()
            transform = train_transforms(crop_size=self.crop_size, scale_range=self.scale_range, mean=self.mean,
                                         std=self.std)
            self.train_set = SegmentationDataset(
                samples, transform, num_classes=self.num_classes, name=f"VOC {self.train_split} {voc_dir}",
                strict=self.strict, check=self.check, counts={"val images removed": removed})
        if stage in ("fit", "validate", "test") and self.val_set is None:
            self.val_set = SegmentationDataset(
                voc_samples(voc_dir, "val"), eval_transforms(mean=self.mean, std=self.std),
                num_classes=self.num_classes, name=f"VOC val {voc_dir}", strict=self.strict, check=self.check)
        if stage == "predict" and self.predict_set is None:
            if self.predict_images is None:
                raise ValueError("predict needs data.predict_images: a folder of images to segment")
            self.predict_set = ImageFolderPredictDataset(self.predict_images, eval_transforms(mean=self.mean,
                                                                                              std=self.std))

    def _loader(self, dataset: Dataset, *, batch_size: int, shuffle: bool, collate=segmentation_collate) -> DataLoader:
        return seeded_loader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle, collate_fn=collate,
                             num_workers=self.num_workers,
                             persistent_workers=self.persistent_workers and self.num_workers > 0,
                             pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, batch_size=self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, batch_size=self.val_batch_size, shuffle=False, collate=predict_collate)
