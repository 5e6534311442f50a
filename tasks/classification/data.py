"""ImageNet-layout classification data: ``{train,val}/<class>/*.jpg``, albumentations transforms."""

from __future__ import annotations

import warnings
from pathlib import Path

import albumentations as A
import lightning as L
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from mobilenetv2_dense.tasks.checks import DatasetReport
from mobilenetv2_dense.tasks.images import IMAGENET_MEAN, IMAGENET_STD, ImageReadError, image_problem, read_rgb
from mobilenetv2_dense.tasks.seeding import seeded_loader
from mobilenetv2_dense.tasks.synthetic import SHAPE_CLASSES, write_image_folder


def classification_transforms(image_size: int, *, train: bool, crop_scale: tuple[float, float] = (0.08, 1.0),
                              mean: tuple[float, ...] = IMAGENET_MEAN,
                              std: tuple[float, ...] = IMAGENET_STD) -> A.Compose:
    """Inception-style random-resized crop + flip for training; resize to 1/0.875 + centre crop for evaluation."""
    if train:
        geometry = [A.RandomResizedCrop(size=(image_size, image_size), scale=crop_scale), A.HorizontalFlip()]
    else:
        geometry = [A.SmallestMaxSize(max_size=int(round(image_size / 0.875))),
                    A.CenterCrop(height=image_size, width=image_size)]
    return A.Compose([*geometry, A.Normalize(mean=mean, std=std), ToTensorV2()])


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` samples as ``(image (3, S, S) float, label int)``.

    Unusable images (missing, unreadable, truncated) are found at construction, reported in one summary and
    skipped (or raised with ``strict=True``); an image that still fails to decode later is replaced by the
    next sample with a warning, so a long run never dies on one bad file.
    """

    def __init__(self, root: str | Path, transform: A.Compose, *, strict: bool = False, check: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist; expected <root>/<class>/*.jpg")
        self.classes, class_to_idx = find_classes(str(self.root))
        report = DatasetReport(f"image folder {self.root}")
        samples = []
        for name in self.classes:
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
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                image = read_rgb(path)
            except ImageReadError as error:
                warnings.warn(f"{error}; using the next sample instead", stacklevel=2)
                continue
            return self.transform(image=image)["image"], label
        raise RuntimeError(f"no image of {str(self.root)!r} could be decoded")


class ImageFolderDataModule(L.LightningDataModule):
    """ImageNet folder layout under ``root``: ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``.

    Args:
        root: the dataset folder.
        image_size: training crop and evaluation size (224 for ImageNet).
        crop_scale: area range of the random-resized training crop (Inception's 0.08-1.0).
        strict: stop at set-up on any unusable image instead of skipping it with a warning.
        persistent_workers: keep loader workers across epochs (saves their start-up; resuming is then not exact,
            see ``tasks/seeding.py``).
    """

    def __init__(self, root: str = "data/imagenet", image_size: int = 224, batch_size: int = 64,
                 num_workers: int = 4, strict: bool = False, check_images: bool = True,
                 crop_scale: tuple[float, float] = (0.08, 1.0),
                 mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD, persistent_workers: bool = False) -> None:
        super().__init__()
        self.root = Path(root)
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.strict, self.check_images, self.mean, self.std = strict, check_images, mean, std
        self.crop_scale, self.persistent_workers = crop_scale, persistent_workers
        self.train_set: ImageFolderDataset | None = None
        self.val_set: ImageFolderDataset | None = None

    @property
    def class_names(self) -> list[str]:
        return find_classes(str(self.root / "train"))[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise FileNotFoundError(
                    f"{str(self.root / split)!r} does not exist; expected the ImageNet layout "
                    f"{self.root}/{{train,val}}/<class>/*.jpg (set data.root)")

    def setup(self, stage: str) -> None:
        make = lambda split, train: ImageFolderDataset(  # noqa: E731
            self.root / split, classification_transforms(self.image_size, train=train, crop_scale=self.crop_scale,
                                                    mean=self.mean, std=self.std),
            strict=self.strict, check=self.check_images)
        if stage == "fit" and self.train_set is None:
            self.train_set = make("train", True)
        if self.val_set is None:
            self.val_set = make("val", False)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return seeded_loader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                             drop_last=shuffle, persistent_workers=self.persistent_workers and self.num_workers > 0,
                             pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class ShapesImageFolderDataModule(ImageFolderDataModule):
    """The generated shapes dataset, written to ``root`` in the ImageNet layout on first use, then read back
    through :class:`ImageFolderDataModule` exactly as a real dataset is."""

    def __init__(self, root: str = "data/shapes_classification", image_size: int = 96, batch_size: int = 32,
                 num_workers: int = 2, images_per_class: int = 120, seed: int = 0, strict: bool = False,
                 crop_scale: tuple[float, float] = (0.5, 1.0), persistent_workers: bool = False) -> None:
        super().__init__(root=root, image_size=image_size, batch_size=batch_size, num_workers=num_workers,
                         strict=strict, crop_scale=crop_scale, persistent_workers=persistent_workers)
        self.images_per_class, self.seed = images_per_class, seed

    @property
    def class_names(self) -> list[str]:
        return sorted(SHAPE_CLASSES)  # the order torchvision's find_classes gives the written folders

    def prepare_data(self) -> None:
        marker = self.root / ".complete"
        if not marker.exists():
            print(f"writing the generated shapes dataset to {self.root} ...")
            write_image_folder(self.root, images_per_class=self.images_per_class, image_size=self.image_size,
                               seed=self.seed)
            marker.write_text("ok\n")
        super().prepare_data()


