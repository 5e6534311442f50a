"""Lightning data modules for segmentation: PASCAL VOC 2012 (+ SBD trainaug), the generated shapes, any image /
mask folders, Cityscapes and ADE20K.

They find the files, build the checked datasets of :mod:`mobilenetv2_dense.datasets.segmentation` in
``setup(stage)`` and leave the loaders to :class:`mobilenetv2_dense.tasks.datamodule.BaseDataModule`.
"""

from __future__ import annotations

import json
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import numpy as np

from ...datasets.checks import DatasetReport
from ...datasets.segmentation.ade20k import ADE20K_CLASSES, ade20k_decoder, ade20k_samples, find_ade20k
from ...datasets.segmentation.cityscapes import (
    CITYSCAPES_CLASSES,
    cityscapes_decoder,
    cityscapes_samples,
    find_cityscapes,
)
from ...datasets.segmentation.classes import ClassTable, class_table
from ...datasets.segmentation.dataset import (
    SegmentationDataset,
    predict_collate,
    segmentation_collate,
)
from ...datasets.segmentation.folders import folder_samples
from ...datasets.segmentation.masks import MaskDecoder
from ...datasets.segmentation.shapes import SHAPES_CLASSES, write_shapes_voc
from ...datasets.segmentation.transforms import eval_transforms, train_transforms
from ...datasets.segmentation.voc import (
    IGNORE_INDEX,
    VOC_PALETTE,
    VOC_SEGMENTATION_CLASSES,
    Sample,
    find_sbd,
    find_voc2012,
    read_list,
    remove_names,
    trainaug_samples,
    voc_samples,
)
from ..datamodule import BaseDataModule, rank_zero_print, segmentation_predict_sample

_MARKER, _WRITING = ".shapes_voc_complete", ".shapes_voc_writing"


class VOCSegmentationDataModule(BaseDataModule):
    """PASCAL VOC 2012 segmentation: train on ``train`` or ``trainaug`` (with SBD), validate and test on ``val``.

    Batches follow the segmentation contract (:mod:`mobilenetv2_dense.datasets.segmentation.dataset`).

    Args:
        root: folder holding ``VOCdevkit/VOC2012`` (or the ``VOC2012`` folder itself).
        sbd_root: SBD for ``trainaug``: the original release (``dataset/cls/*.mat``) or a folder with the converted
            ``SegmentationClassAug/*.png`` (+ ``train_aug.txt``); ``None`` looks beside VOC.
        train_split: ``"trainaug"`` (10,582 images: SBD train+val + VOC train, minus VOC val) or ``"train"``
            (1,464). The val images are always removed from the training list.
        crop_size: square training crop (DeepLab: 513; 512 here).
        scale_range: random scale factors for training.
        check: run the set-up check (every mask is decoded once); ``False`` trusts the files.
        predict_images: what ``predict`` reads: a folder of images, an image file, a glob or a video file.
        batch_size / val_batch_size: training batch (>= 12 for good BN statistics) / full-resolution evaluation.
        **loader_options: :class:`~mobilenetv2_dense.tasks.datamodule.BaseDataModule`'s (``num_workers``,
            ``pin_memory``, ``persistent_workers``, ``mean``, ``std``, ``strict``).
    """

    class_names: tuple[str, ...] = VOC_SEGMENTATION_CLASSES
    collate = staticmethod(segmentation_collate)
    predict_collate = staticmethod(predict_collate)

    def __init__(self, root: str = "data/voc", *, sbd_root: str | None = None,
                 train_split: Literal["train", "trainaug"] = "trainaug", crop_size: int = 512,
                 scale_range: tuple[float, float] = (0.5, 2.0), check: bool = True, predict_images: str | None = None,
                 batch_size: int = 16, val_batch_size: int = 4, **loader_options: Any) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, **loader_options)
        if train_split not in ("train", "trainaug"):
            raise ValueError(f"train_split={train_split!r}; use 'train' or 'trainaug'")
        self.root, self.sbd_root, self.train_split = Path(root), sbd_root, train_split
        self.crop_size, self.scale_range = crop_size, tuple(scale_range)
        self.check, self.predict_images = check, predict_images

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
            rank_zero_print(f"trainaug: VOC train + {len(sbd.names)} SBD names from {sbd.description}")
            samples = trainaug_samples(voc_dir, sbd)
        else:
            samples = voc_samples(voc_dir, "train")
        val_names = read_list(voc_dir / "ImageSets" / "Segmentation" / "val.txt")
        samples, removed = remove_names(samples, val_names)
        rank_zero_print(f"{self.train_split}: removed {removed} images of the val list from the training list "
              f"({len(samples)} left)")
        return samples, removed

    def setup(self, stage: str) -> None:
        voc_dir = find_voc2012(self.root) if stage != "predict" else None
        if stage == "fit" and self.train_dataset is None:
            samples, removed = self.train_samples()
            transform = train_transforms(crop_size=self.crop_size, scale_range=self.scale_range, mean=self.mean,
                                         std=self.std)
            self.train_dataset = SegmentationDataset(
                samples, transform, num_classes=self.num_classes, name=f"VOC {self.train_split} {voc_dir}",
                strict=self.strict, check=self.check, counts={"val images removed": removed})
        if stage in ("fit", "validate", "test") and self.val_dataset is None:
            self.val_dataset = SegmentationDataset(
                voc_samples(voc_dir, "val"), eval_transforms(mean=self.mean, std=self.std),
                num_classes=self.num_classes, name=f"VOC val {voc_dir}", strict=self.strict, check=self.check)
        if stage == "predict" and self.predict_dataset is None:
            self.predict_dataset = self.predict_images_dataset(
                self.predict_images, segmentation_predict_sample(eval_transforms(mean=self.mean, std=self.std)))


class ShapesVOCDataModule(VOCSegmentationDataModule):
    """Generated shapes in the VOC layout (:func:`mobilenetv2_dense.datasets.segmentation.shapes.write_shapes_voc`),
    written under ``root`` on first use and read back through the VOC path (``train_split="train"``: there is no
    SBD). K = 5: background + ``SHAPE_CLASSES``. ``**options``: :class:`VOCSegmentationDataModule`'s (``scale_range``,
    ``batch_size``, ...) and the loader options."""

    class_names = SHAPES_CLASSES

    def __init__(self, root: str = "data/shapes_voc", *, num_train: int = 600, num_val: int = 100,
                 image_size: tuple[int, int] = (256, 320), seed: int = 0, crop_size: int = 256,
                 val_batch_size: int = 8, num_workers: int = 2, **options: Any) -> None:
        super().__init__(root, sbd_root=None, train_split="train", crop_size=crop_size, val_batch_size=val_batch_size,
                         num_workers=num_workers, **options)
        self.num_train, self.num_val, self.image_size, self.seed = num_train, num_val, tuple(image_size), seed

    def prepare_data(self) -> None:
        settings = json.dumps({"num_train": self.num_train, "num_val": self.num_val,
                               "image_size": list(self.image_size), "seed": self.seed})
        marker, writing, tree = self.root / _MARKER, self.root / _WRITING, self.root / "VOCdevkit"
        if marker.is_file() and marker.read_text() == settings:
            return
        if tree.exists():
            if not (marker.is_file() or writing.is_file()):
                raise FileExistsError(f"{str(tree)!r} exists but was not written by ShapesVOCDataModule (no "
                                      f"{_MARKER} / {_WRITING} beside it); choose an empty data.root")
            shutil.rmtree(tree)  # half-written, or written with other settings
        marker.unlink(missing_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        writing.write_text(settings)
        rank_zero_print(f"writing the generated shapes VOC dataset to {self.root} ...")
        write_shapes_voc(self.root, num_train=self.num_train, num_val=self.num_val, image_size=self.image_size,
                         seed=self.seed)
        marker.write_text(settings)  # last: a tree without it is rewritten
        writing.unlink()
        super().prepare_data()


class SegmentationFilesDataModule(BaseDataModule):
    """What the folder, Cityscapes and ADE20K data modules share: a split's pairs from the layout
    (:meth:`split_samples`), masks read by the dataset's
    :class:`~mobilenetv2_dense.datasets.segmentation.masks.MaskDecoder` (:attr:`decoder`), the set-up check and
    DeepLab's augmentation. Batches follow the segmentation contract
    (:mod:`mobilenetv2_dense.datasets.segmentation.dataset`); ``test`` runs on the val split.

    Args:
        crop_size: square training crop.
        scale_range: random scale factors for training.
        check: run the set-up check (every mask is decoded once); ``False`` trusts the files (pairing problems are
            still reported).
        predict_images: what ``predict`` reads: a folder of images, an image file, a glob or a video file.
        batch_size / val_batch_size: training batch (>= 12 for good BN statistics) / full-resolution evaluation.
        **loader_options: :class:`~mobilenetv2_dense.tasks.datamodule.BaseDataModule`'s (``num_workers``,
            ``pin_memory``, ``persistent_workers``, ``mean``, ``std``, ``strict``).
    """

    class_names: tuple[str, ...] = ()
    collate = staticmethod(segmentation_collate)
    predict_collate = staticmethod(predict_collate)

    def __init__(self, *, crop_size: int = 512, scale_range: tuple[float, float] = (0.5, 2.0), check: bool = True,
                 predict_images: str | None = None, batch_size: int = 16, val_batch_size: int = 4,
                 **loader_options: Any) -> None:
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size, **loader_options)
        self.crop_size, self.scale_range = crop_size, tuple(scale_range)
        self.check, self.predict_images = check, predict_images

    @property
    def num_classes(self) -> int:
        """K, the classes the masks are read into (the CLI links it into ``model.init_args.num_classes``)."""
        return len(self.class_names)

    @property
    def decoder(self) -> MaskDecoder:
        """How this dataset's mask files become train labels."""
        raise NotImplementedError

    def split_samples(self, split: str, report: DatasetReport) -> list[Sample]:
        """The ``split`` (``"train"`` / ``"val"``) as image / mask pairs, pairing problems recorded in ``report``."""
        raise NotImplementedError

    def split_name(self, split: str) -> str:
        """How the set-up summary names ``split``."""
        return f"{type(self).__name__} {split}"

    def dataset(self, split: str, transform: A.Compose) -> SegmentationDataset:
        """The checked dataset of ``split``: its pairs, the pixel check, one summary for both."""
        report = DatasetReport(self.split_name(split))
        samples = self.split_samples(split, report)
        return SegmentationDataset(samples, transform, num_classes=self.num_classes, name=report.name,
                                   strict=self.strict, check=self.check, read_mask=self.decoder, report=report)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_dataset is None:
            self.train_dataset = self.dataset("train", train_transforms(
                crop_size=self.crop_size, scale_range=self.scale_range, mean=self.mean, std=self.std))
        if stage in ("fit", "validate", "test") and self.val_dataset is None:
            self.val_dataset = self.dataset("val", eval_transforms(mean=self.mean, std=self.std))
        if stage == "predict" and self.predict_dataset is None:
            self.predict_dataset = self.predict_images_dataset(
                self.predict_images, segmentation_predict_sample(eval_transforms(mean=self.mean, std=self.std)))


class SegmentationFolderDataModule(SegmentationFilesDataModule):
    """Your own segmentation set: image and mask folders paired by name
    (:mod:`mobilenetv2_dense.datasets.segmentation.folders`), the classes you name.

    Masks are palette or grayscale PNGs of class indices (``0..K-1``, ``ignore_index`` for unlabelled pixels), or
    RGB colour masks read through a colour table (``colors``). The set-up check reports, naming each file: images
    without a mask and masks without an image, unreadable files, masks of another size than their image, values
    that are no class and not ``ignore_index``, colours not in the table; ``strict`` stops instead of skipping.

    Args:
        train_images, train_masks, val_images, val_masks: the folders (``fit`` needs all four, ``validate`` and
            ``test`` the val pair, ``predict`` none).
        classes: the class names, label 0 first: a list, or the path of a ``classes.txt`` (one per line) or YAML
            file (:mod:`mobilenetv2_dense.datasets.segmentation.classes`, which may hold the colours too).
        colors: RGB masks: the ``[R, G, B]`` of each class, in label order (replaces the classes file's).
        ignore_colors: RGB masks: colours of unlabelled pixels (void).
        ignore_index: the mask value of unlabelled pixels (read as void; not a class index).
        reduce_zero_label: masks hold 0 for "other" (void) and the classes as ``1..K`` (ADE20K's convention).
        mask_suffix: the end of a mask's name after the image's (``_mask`` pairs ``a.jpg`` with ``a_mask.png``).
        train_list, val_list: optional split lists: text files of names (one per line, with or without suffix)
            choosing and ordering the pairs.
        **options: :class:`SegmentationFilesDataModule`'s (``crop_size``, ``batch_size``, ...) and the loader
            options.
    """

    def __init__(self, train_images: str | None = None, train_masks: str | None = None, val_images: str | None = None,
                 val_masks: str | None = None, *, classes: list[str] | str,
                 colors: list[tuple[int, int, int]] | None = None,
                 ignore_colors: list[tuple[int, int, int]] | None = None, ignore_index: int = IGNORE_INDEX,
                 reduce_zero_label: bool = False, mask_suffix: str = "", train_list: str | None = None,
                 val_list: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.folders = {"train": (train_images, train_masks, train_list), "val": (val_images, val_masks, val_list)}
        self.classes, self.colors, self.ignore_colors = classes, colors, ignore_colors
        self.ignore_index, self.reduce_zero_label, self.mask_suffix = ignore_index, reduce_zero_label, mask_suffix

    @cached_property
    def class_table(self) -> ClassTable:
        """The names and colours, read once from ``classes`` (``FileNotFoundError`` / ``ValueError`` name the
        file)."""
        return class_table(self.classes, colours=self.colors, ignore_colours=self.ignore_colors)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.class_table.names

    @property
    def palette(self) -> np.ndarray:
        """``(256, 3)`` uint8 colours of predicted masks and overlays: the classes' own colours where the data has
        colour masks, the VOC colour map elsewhere (and for the void label)."""
        colours = self.class_table.colours
        if colours is None:
            return VOC_PALETTE
        palette = VOC_PALETTE.copy()
        palette[: len(colours)] = np.asarray(colours, dtype=np.uint8)
        return palette

    @cached_property
    def decoder(self) -> MaskDecoder:
        table = self.class_table
        decoder = MaskDecoder.indices(len(table.names), ignore_index=self.ignore_index,
                                      reduce_zero_label=self.reduce_zero_label)
        return decoder if table.colours is None else decoder.with_colours(table.colours, table.ignore_colours)

    def split_name(self, split: str) -> str:
        return f"{split} {self.folders[split][0]}"

    def split_samples(self, split: str, report: DatasetReport) -> list[Sample]:
        images, masks, names = self.folders[split]
        if images is None or masks is None:
            needs = "fit needs" if split == "train" else "fit, validate and test need"
            raise ValueError(f"{type(self).__name__}: {needs} data.init_args.{split}_images and {split}_masks "
                             f"(got {images!r} and {masks!r}): the folders of the {split} images and their masks")
        for option, folder in ((f"{split}_images", images), (f"{split}_masks", masks)):
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"{type(self).__name__}: data.init_args.{option}={folder!r} is not a folder; "
                                        f"set it to the folder of the {split} {option.split('_')[1]}")
        return folder_samples(images, masks, mask_suffix=self.mask_suffix, split_list=names, report=report)


class CityscapesDataModule(SegmentationFilesDataModule):
    """Cityscapes fine annotations (:mod:`mobilenetv2_dense.datasets.segmentation.cityscapes`): train on
    ``train`` (2,975 images), validate and test on ``val`` (500), 19 classes, every other label void.

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        labels: ``"labelIds"`` (the masks as released, mapped by cityscapesScripts' labelId -> trainId table) or
            ``"labelTrainIds"`` (masks already converted by ``createTrainIdLabelImgs.py``).
        crop_size: square training crop (769 in DeepLab's Cityscapes recipe); evaluation runs on the full
            2048x1024 images.
        **options: :class:`SegmentationFilesDataModule`'s and the loader options.
    """

    class_names = CITYSCAPES_CLASSES

    def __init__(self, root: str = "data/cityscapes", *, labels: Literal["labelIds", "labelTrainIds"] = "labelIds",
                 crop_size: int = 769, batch_size: int = 8, val_batch_size: int = 2, **options: Any) -> None:
        super().__init__(crop_size=crop_size, batch_size=batch_size, val_batch_size=val_batch_size, **options)
        self.root, self.labels = Path(root), labels
        self._decoder = cityscapes_decoder(labels)  # refuses an unknown ``labels`` at construction, not at set-up

    @property
    def decoder(self) -> MaskDecoder:
        return self._decoder

    def prepare_data(self) -> None:
        if self.trainer is None or not self.trainer.predicting:
            find_cityscapes(self.root)  # fail before any worker starts, with the layout in the message

    def split_name(self, split: str) -> str:
        return f"Cityscapes {split} {self.root}"

    def split_samples(self, split: str, report: DatasetReport) -> list[Sample]:
        return cityscapes_samples(self.root, split, report=report, labels=self.labels)


class ADE20KDataModule(SegmentationFilesDataModule):
    """ADE20K SceneParsing, 150 classes (:mod:`mobilenetv2_dense.datasets.segmentation.ade20k`): train on
    ``training`` (20,210 images), validate and test on ``validation`` (2,000); annotation 0 ("other") is void.

    Args:
        root: the folder holding ``ADEChallengeData2016`` (or that folder itself).
        **options: :class:`SegmentationFilesDataModule`'s (``crop_size`` 512, ...) and the loader options.
    """

    class_names = ADE20K_CLASSES

    def __init__(self, root: str = "data/ade20k", **options: Any) -> None:
        super().__init__(**options)
        self.root = Path(root)

    @property
    def decoder(self) -> MaskDecoder:
        return ade20k_decoder()

    def prepare_data(self) -> None:
        if self.trainer is None or not self.trainer.predicting:
            find_ade20k(self.root)

    def split_name(self, split: str) -> str:
        return f"ADE20K {split} {self.root}"

    def split_samples(self, split: str, report: DatasetReport) -> list[Sample]:
        return ade20k_samples(self.root, split, report=report)
