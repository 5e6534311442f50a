"""Lightning data modules for detection: COCO-format data, PASCAL VOC, YOLO-format data and the generated shapes, one
interface.

All expose ``num_classes`` (K object classes), ``class_names``, ``label_to_cat_id`` (label 1..K -> the category
id the ground truth uses) and ``val_coco`` (a pycocotools ``COCO`` ground truth of the validation split), so one
COCOeval path evaluates any. The test split is the validation split. Batches follow the detection contract
(see ``datasets/detection/dataset.py``); ``predict_images`` (a folder, a file, a glob, a video) gives batches whose
targets carry ``path`` and ``orig_size``. The loader options (``batch_size``, ``num_workers``, ...) are
:class:`mobilenetv2_dense.tasks.datamodule.BaseDataModule`'s.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from ...datasets.checks import DatasetError
from ...datasets.detection.coco import COCODetection
from ...datasets.detection.dataset import Transform, detection_collate
from ...datasets.detection.shapes import MARKER, shape_categories, write_shapes_coco
from ...datasets.detection.transforms import DetectionAugment, eval_transform, train_transform
from ...datasets.detection.voc import VOC_CLASSES, VOCDetection
from ...datasets.detection.yolo import YOLODataConfig, YOLODetection, read_data_yaml
from ..datamodule import BaseDataModule, detection_predict_sample


class DetectionDataModule(BaseDataModule):
    """Transforms and the predict folder shared by :class:`COCODataModule`, :class:`VOCDetectionDataModule` and
    :class:`YOLODataModule`; subclasses say how to build a split (``make_dataset``).

    Args:
        image_size: the square network input ``S`` (images are resized to ``S x S``, no letterbox).
        augment: which parts of SSD's training augmentation to use (all by default).
        predict_images: what ``predict`` reads: a folder of images, an image file, a glob or a video file.
        **loader_options: :class:`~mobilenetv2_dense.tasks.datamodule.BaseDataModule`'s (``batch_size``,
            ``num_workers``, ``pin_memory``, ``persistent_workers``, ``mean``, ``std``, ``strict``, ...).
    """

    collate = staticmethod(detection_collate)

    def __init__(self, *, image_size: int = 320, augment: DetectionAugment | None = None,
                 predict_images: str | None = None, **loader_options: Any) -> None:
        super().__init__(**loader_options)
        self.image_size = image_size
        self.augment = augment or DetectionAugment()
        self.predict_images = predict_images

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

    def train_boxes(self) -> list[Tensor]:
        """The training split's boxes per image, ``(M_i, 4)`` xyxy in the pixels of the network input (each image
        resized to ``image_size``, no augmentation; crowd / difficult boxes left out), read from the annotations
        (COCO json, VOC xml, YOLO txt) and the image headers: no image is decoded (for fitting anchors, see
        :mod:`mobilenetv2_dense.tasks.detection.anchors`)."""
        dataset = self.train_dataset if self.train_dataset is not None else self.make_dataset("train", None)
        parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
        return [boxes for part in parts for boxes in part.resized_boxes((self.image_size, self.image_size))]

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_dataset is None:
            self.train_dataset = self.make_dataset("train", self.train_transform())
        if stage in ("fit", "validate", "test") and self.val_dataset is None:
            self.val_dataset = self.make_dataset("val", self.eval_transform())
        if stage == "predict" and self.predict_dataset is None:
            self.predict_dataset = self.predict_images_dataset(self.predict_images,
                                                               detection_predict_sample(self.eval_transform()))


class COCODataModule(DetectionDataModule):
    """COCO 2017 under ``root`` (``annotations/instances_{train,val}2017.json``, ``train2017/``, ``val2017/``),
    or any COCO-format data through ``train_images``, ``train_annotations``, ``val_images``, ``val_annotations``
    (each overrides its ``root`` default).

    ``val_coco`` is the pycocotools ``COCO`` of ``val_annotation_file``; ``label_to_cat_id`` maps labels 1..K
    back to its category ids. ``**options``: :class:`DetectionDataModule`'s (``image_size``, ``augment``, ...) and
    the loader options.
    """

    dataset_class: type[COCODetection] = COCODetection  # what reads a split (a subclass adds to the items)

    def __init__(self, root: str | None = None, *, train_images: str | None = None,
                 train_annotations: str | None = None, val_images: str | None = None,
                 val_annotations: str | None = None, **options: Any) -> None:
        super().__init__(**options)
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
        dataset = self.dataset_class(images, annotations, transform=transform, strict=self.strict)
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
    ``**options``: :class:`DetectionDataModule`'s (``image_size``, ``augment``, ...) and the loader options.
    """

    class_names = list(VOC_CLASSES)
    label_to_cat_id = VOCDetection.label_to_cat_id
    val_annotation_file = None  # the VOC ground truth lives in memory (val_coco)
    dataset_class: type[VOCDetection] = VOCDetection  # what reads a set (a subclass adds to the items)

    def __init__(self, root: str, *, train_sets: tuple[str, ...] = ("VOC2012/train",),
                 val_set: str = "VOC2012/val", **options: Any) -> None:
        super().__init__(**options)
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
        return self.dataset_class(self.root / folder, split=split, transform=transform, strict=self.strict)

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


class YOLODataModule(DetectionDataModule):
    """YOLO-format data read as it is: ``data_yaml`` names the dataset folder, the ``train`` / ``val`` (and
    optionally ``test``) images and the class ``names``; each image's labels are in the ``labels`` twin of its
    ``images`` folder (:mod:`mobilenetv2_dense.datasets.detection.yolo`).

    Labels are 1..K in increasing YAML class id; ``label_to_cat_id`` maps them back to the YAML's ids, which
    ``predictions.json`` and exported models report. ``val_coco`` (and ``test_coco`` when the YAML has ``test``) is
    the ground truth built in memory, so :class:`~mobilenetv2_dense.tasks.detection.DetectionTask` scores it with
    COCO's metrics; without ``test`` the test split is the val split. ``**options``: :class:`DetectionDataModule`'s
    (``image_size``, ``augment``, ...) and the loader options.
    """

    def __init__(self, data_yaml: str, **options: Any) -> None:
        super().__init__(**options)
        self.data_yaml = data_yaml
        self.test_dataset: Dataset | None = None
        self._coco: dict[str, COCO] = {}

    @cached_property
    def config(self) -> YOLODataConfig:
        """The parsed ``data_yaml`` (read once; raises naming the file when it is missing or malformed)."""
        return read_data_yaml(self.data_yaml)

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def label_to_cat_id(self) -> dict[int, int]:
        return self.config.label_to_cat_id

    @property
    def paths(self) -> dict[str, str | None]:
        """``val_images``: the folder the ground truth's ``file_name`` entries are relative to (the dataset
        folder), so predictions on val images carry their val image ids; ``None`` without a readable val split."""
        try:
            self.config.sources("val")
        except (FileNotFoundError, ValueError):
            return {"val_images": None}
        return {"val_images": str(self.config.root)}

    def prepare_data(self) -> None:
        """Only checks that ``data_yaml`` and the folders it names exist (nothing is downloaded); ``predict``
        needs none of them."""
        if self.trainer is not None and self.trainer.predicting:
            return
        for split in ("train", "val"):
            self.config.sources(split)

    def make_dataset(self, split: str, transform: Transform) -> YOLODetection:
        return YOLODetection(self.config, split, transform=transform, strict=self.strict)

    def setup(self, stage: str) -> None:
        if stage == "test" and "test" in self.config.splits:
            if self.test_dataset is None:
                self.test_dataset = self.make_dataset("test", self.eval_transform())
            return
        super().setup(stage)

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.test_dataset if self.test_dataset is not None else self.val_dataset, train=False)

    def _ground_truth(self, split: str) -> COCO:
        if split not in self._coco:
            dataset = self.test_dataset if split == "test" else self.val_dataset
            if dataset is None:
                self.setup("test" if split == "test" else "validate")
                dataset = self.test_dataset if split == "test" else self.val_dataset
            self._coco[split] = dataset.to_coco()
        return self._coco[split]

    @property
    def val_coco(self) -> COCO:
        """The val split's ground truth (category ids: the YAML's class ids)."""
        return self._ground_truth("val")

    @property
    def test_coco(self) -> COCO | None:
        """The test split's ground truth when the YAML has ``test``, else ``None`` (the evaluator then uses
        ``val_coco``)."""
        return self._ground_truth("test") if "test" in self.config.splits else None


class ShapesCOCODataModule(COCODataModule):
    """:class:`COCODataModule` over generated shapes: ``prepare_data`` writes them under ``root``
    (:func:`mobilenetv2_dense.datasets.detection.shapes.write_shapes_coco`) unless a complete dataset with the same
    settings is already there (a missing or different marker means rewrite).

    ``scene_size`` is the size of the written images; ``image_size`` the network input, as for real data.
    ``object_size`` and ``elongation`` shape the objects (see ``write_shapes_coco``): ``elongation: [5, 10]`` writes
    rods and bars of 1:5..1:10, far from the COCO-like boxes SSD's default anchors are tuned to.
    ``**options``: :class:`DetectionDataModule`'s (``image_size``, ``augment``, ...) and the loader options.
    """

    def __init__(self, root: str = "data/shapes_coco", *, num_train: int = 1500, num_val: int = 200,
                 scene_size: int = 320, seed: int = 0, object_size: tuple[float, float] = (0.1, 0.5),
                 elongation: tuple[float, float] | None = None, **options: Any) -> None:
        # the files are always the written ones under root, so the path overrides are not options here
        super().__init__(root, train_images=None, train_annotations=None, val_images=None, val_annotations=None,
                         **options)
        self.write_args = {"num_train": num_train, "num_val": num_val, "image_size": scene_size, "seed": seed,
                           "object_size": list(object_size), "elongation": None if elongation is None else
                           list(elongation)}

    def prepare_data(self) -> None:
        marker = Path(self.root) / MARKER
        written = json.loads(marker.read_text()) if marker.is_file() else {}
        # markers written before object_size and elongation existed hold the defaults' data: no rewrite
        written = {"object_size": [0.1, 0.5], "elongation": None, **written}
        if any(written.get(key) != value for key, value in self.write_args.items()):
            write_shapes_coco(self.root, **self.write_args)
        super().prepare_data()

    @cached_property
    def _categories(self) -> list[dict]:
        """Known without the files, so ``num_classes`` works before ``prepare_data`` has written them."""
        return shape_categories()
