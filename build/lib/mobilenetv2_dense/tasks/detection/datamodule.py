"""Lightning data modules for detection: COCO-format data and PASCAL VOC, one interface.

Both expose ``num_classes`` (K object classes), ``class_names``, ``label_to_cat_id`` (label 1..K -> the category
id the ground truth uses) and ``val_coco`` (a pycocotools ``COCO`` ground truth of the validation split), so one
COCOeval path evaluates either. The test split is the validation split. Batches follow the detection contract
(see ``tasks/detection/data.py``); ``predict_images`` (a folder) gives batches whose targets carry ``path`` and
``orig_size``.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import lightning as L
from pycocotools.coco import COCO
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from mobilenetv2_dense.tasks.checks import DatasetError
from mobilenetv2_dense.tasks.detection.coco import COCODetection
from mobilenetv2_dense.tasks.detection.data import DetectionDataset, ImageFolderDetection, Transform, detection_collate
from mobilenetv2_dense.tasks.detection.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DetectionAugment,
    eval_transform,
    train_transform,
)
from mobilenetv2_dense.tasks.detection.voc import VOC_CLASSES, VOCDetection
from mobilenetv2_dense.tasks.seeding import seeded_loader


class DetectionDataModule(L.LightningDataModule):
    """Loaders, transforms and the predict folder shared by :class:`COCODataModule` and
    :class:`VOCDetectionDataModule`; subclasses say how to build a split (``make_dataset``).

    ``persistent_workers`` keeps loader workers across epochs: it saves their start-up, but resuming is then not
    exact (their augmentation state is in no checkpoint; see ``tasks/seeding.py``).
    """

    def __init__(self, *, image_size: int = 320, batch_size: int = 32, num_workers: int = 4,
                 mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD,
                 strict: bool = False, pin_memory: bool = True,
                 persistent_workers: bool = False, augment: DetectionAugment | None = None,
                 predict_images: str | None = None) -> None:
        super().__init__()
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.mean, self.std = tuple(mean), tuple(std)
        self.strict, self.pin_memory, self.persistent_workers = strict, pin_memory, persistent_workers
        self.augment = augment or DetectionAugment()
        self.predict_images = predict_images
        self.train_dataset: Dataset | None = None
        self.val_dataset: DetectionDataset | None = None
        self.predict_dataset: ImageFolderDetection | None = None

    def make_dataset(self, split: str, transform: Transform) -> Dataset:
        """The ``"train"`` or ``"val"`` dataset with ``transform``."""
        raise NotImplementedError

    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (labels 1..K; the classifier has K + 1 outputs)."""
        return len(self.class_names)

    def train_transform(self) -> Transform:
        return train_transform(image_size=self.image_size, mean=self.mean, std=self.std, augment=self.augment)

    def eval_transform(self) -> Transform:
        return eval_transform(image_size=self.image_size, mean=self.mean, std=self.std)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_dataset is None:
            self.train_dataset = self.make_dataset("train", self.train_transform())
        if stage in ("fit", "validate", "test") and self.val_dataset is None:
            self.val_dataset = self.make_dataset("val", self.eval_transform())
        if stage == "predict" and self.predict_dataset is None:
            if self.predict_images is None:
                raise ValueError(f"{type(self).__name__}: predict needs predict_images=<folder of images>")
            self.predict_dataset = ImageFolderDetection(self.predict_images, transform=self.eval_transform(),
                                                        strict=self.strict)

    def _loader(self, dataset: Dataset | None, *, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() for this stage before asking for its loader")
        return seeded_loader(dataset, batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers,
                             collate_fn=detection_collate, pin_memory=self.pin_memory,
                             drop_last=train and len(dataset) > self.batch_size,  # no tiny last batch for BatchNorm
                             persistent_workers=self.persistent_workers and self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_dataset, train=False)


class COCODataModule(DetectionDataModule):
    """COCO 2017 under ``root`` (``annotations/instances_{train,val}2017.json``, ``train2017/``, ``val2017/``),
    or any COCO-format data through ``train_images``, ``train_annotations``, ``val_images``, ``val_annotations``
    (each overrides its ``root`` default).

    ``val_coco`` is the pycocotools ``COCO`` of ``val_annotation_file``; ``label_to_cat_id`` maps labels 1..K
    back to its category ids.
    """

    def __init__(self, root: str | None = None, *, train_images: str | None = None,
                 train_annotations: str | None = None, val_images: str | None = None,
                 val_annotations: str | None = None, image_size: int = 320, batch_size: int = 32,
                 num_workers: int = 4, mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD, strict: bool = False, pin_memory: bool = True,
                 persistent_workers: bool = False,
                 augment: DetectionAugment | None = None, predict_images: str | None = None) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers, mean=mean, std=std,
                         strict=strict, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, augment=augment, predict_images=predict_images)
        self.root = root
        base = Path(root) if root else None
        default = lambda relative: str(base / relative) if base else None
        self.paths = {"train_images": train_images or default("train2017"),
                      "train_annotations": train_annotations or default("annotations/instances_train2017.json"),
                      "val_images": val_images or default("val2017"),
                      "val_annotations": val_annotations or default("annotations/instances_val2017.json")}

    @property
    def val_annotation_file(self) -> Path:
        return Path(self._path("val_annotations"))

    def _path(self, key: str) -> str:
        path = self.paths[key]
        if path is None:
            raise ValueError(f"{type(self).__name__}: no {key}; pass root=<COCO folder> or {key}=<path>")
        return path

    def _layout_error(self, path: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"{type(self).__name__}: {path!r} not found. Expected the COCO 2017 layout under root: "
            "annotations/instances_train2017.json, annotations/instances_val2017.json, train2017/, val2017/; "
            "or pass train_images, train_annotations, val_images, val_annotations for custom COCO-format data.")

    def prepare_data(self) -> None:
        """Only checks that the configured paths exist (COCO is not downloaded here); ``predict`` needs none."""
        if self.trainer is not None and self.trainer.predicting:
            return
        for key in ("train_images", "train_annotations", "val_images", "val_annotations"):
            path = self.paths[key]
            if path is not None and not Path(path).exists():
                raise self._layout_error(path)

    def make_dataset(self, split: str, transform: Transform) -> COCODetection:
        images, annotations = self._path(f"{split}_images"), self._path(f"{split}_annotations")
        for path in (images, annotations):
            if not Path(path).exists():
                raise self._layout_error(path)
        dataset = COCODetection(images, annotations, transform=transform, strict=self.strict)
        if dataset.cat_id_to_label != self._category_map():
            raise DatasetError(f"categories of {annotations} differ from those of {self.val_annotation_file}; "
                               "train and val must share one category list")
        return dataset

    @cached_property
    def _categories(self) -> list[dict]:
        """The val json's categories sorted by id (read before set-up, so LightningCLI can link num_classes)."""
        path = self.val_annotation_file
        if not path.is_file():
            raise self._layout_error(str(path))
        with path.open() as handle:
            return sorted(json.load(handle)["categories"], key=lambda c: c["id"])

    def _category_map(self) -> dict[int, int]:
        return {int(c["id"]): label for label, c in enumerate(self._categories, start=1)}

    @property
    def class_names(self) -> list[str]:
        return [str(c["name"]) for c in self._categories]

    @property
    def label_to_cat_id(self) -> dict[int, int]:
        return {label: cat for cat, label in self._category_map().items()}

    @property
    def val_coco(self) -> COCO:
        """The validation ground truth (crowd annotations included, as COCOeval expects)."""
        if self.val_dataset is None:
            self.setup("validate")
        return self.val_dataset.coco


class VOCDetectionDataModule(DetectionDataModule):
    """PASCAL VOC detection from ``root`` = ``VOCdevkit``: ``train_sets`` and ``val_set`` name ``"VOC2012/train"``
    style ``folder/split`` pairs (``["VOC2007/trainval", "VOC2012/trainval"]`` + ``"VOC2007/test"`` is "07+12").

    20 classes; ``val_coco`` is built in memory from the val split (difficult objects as crowd, so ignored).
    """

    class_names = list(VOC_CLASSES)
    label_to_cat_id = VOCDetection.label_to_cat_id
    val_annotation_file = None  # the VOC ground truth lives in memory (val_coco)

    def __init__(self, root: str, *, train_sets: tuple[str, ...] = ("VOC2012/train",),
                 val_set: str = "VOC2012/val", image_size: int = 320, batch_size: int = 32, num_workers: int = 4,
                 mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD,
                 strict: bool = False, pin_memory: bool = True,
                 persistent_workers: bool = False, augment: DetectionAugment | None = None,
                 predict_images: str | None = None) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers, mean=mean, std=std,
                         strict=strict, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, augment=augment, predict_images=predict_images)
        self.root = Path(root)
        self.train_sets, self.val_set = tuple(train_sets), val_set
        self._val_coco: COCO | None = None

    def _split(self, name: str, transform: Transform) -> VOCDetection:
        folder, _, split = name.rpartition("/")
        if not folder or not (self.root / folder).is_dir():
            raise FileNotFoundError(
                f"VOCDetectionDataModule: {str(self.root / folder)!r} not found for {name!r}. Expected root = "
                "VOCdevkit holding VOC2007/ or VOC2012/ (Annotations/, JPEGImages/, ImageSets/Main/), and sets "
                "named like 'VOC2012/train'.")
        return VOCDetection(self.root / folder, split=split, transform=transform, strict=self.strict)

    def prepare_data(self) -> None:
        """Only checks that the split lists exist (VOC is not downloaded here)."""
        for name in (*self.train_sets, self.val_set):
            folder, _, split = name.rpartition("/")
            path = self.root / folder / "ImageSets" / "Main" / f"{split}.txt"
            if not path.is_file():
                raise FileNotFoundError(f"VOCDetectionDataModule: {str(path)!r} not found for set {name!r}; "
                                        "expected root = VOCdevkit with the VOC20xx layout")

    def make_dataset(self, split: str, transform: Transform) -> Dataset:
        if split == "val":
            return self._split(self.val_set, transform)
        parts = [self._split(name, transform) for name in self.train_sets]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    @property
    def val_coco(self) -> COCO:
        if self._val_coco is None:
            if self.val_dataset is None:
                self.setup("validate")
            self._val_coco = self.val_dataset.to_coco()
        return self._val_coco
