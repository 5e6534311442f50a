"""The ImageNet folder layout: ``<root>/<class>/*.jpg`` samples, checked at construction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import albumentations as A
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from ..checks import DatasetReport
from ..images import image_problem, load_or_replace, read_rgb


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` samples as ``(image (3, S, S) float, label int)``.

    Unusable images (missing, unreadable, truncated) are found at construction, reported in one summary and
    skipped (or raised with ``strict=True``); an image that still fails to decode later is replaced by the
    next sample with a warning (:func:`mobilenetv2_dense.datasets.images.load_or_replace`).

    ``classes``: the label order to use, the training split's (``None``: this folder's class folders, sorted), so
    a validation folder without some class keeps the training labels; a class folder not in it is an error.
    """

    def __init__(self, root: str | Path, transform: A.Compose, *, classes: Sequence[str] | None = None,
                 strict: bool = False, check: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist; expected <root>/<class>/*.jpg")
        found, _ = find_classes(str(self.root))
        self.classes = list(found if classes is None else classes)
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(f"ImageFolderDataset: {str(self.root)!r} has class folders {unknown} that the training "
                             f"split has not ({len(self.classes)} classes); give every split the training split's "
                             "class folders")
        class_to_idx = {name: label for label, name in enumerate(self.classes)}
        report = DatasetReport(f"image folder {self.root}")
        samples = []
        for name in found:
            for path in sorted((self.root / name).iterdir()):
                if path.suffix.lower() not in IMG_EXTENSIONS:
                    continue
                problem = image_problem(path) if check else None
                if problem:
                    report.add(f"{problem.split(' ')[0]} images", str(path), problem)
                else:
                    samples.append((str(path), class_to_idx[name]))
        report.counts = {"classes": len(self.classes), "images kept": len(samples)}
        report.finish(strict, fix="Remove or replace these files, or pass strict=False to skip them.")
        if not samples:
            raise ValueError(f"no usable images under {str(self.root)!r}; expected <root>/<class>/*.jpg")
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple:
        return load_or_replace(self.load, index, len(self))

    def load(self, index: int) -> tuple:
        path, label = self.samples[index]
        return self.transform(image=read_rgb(path))["image"], label
