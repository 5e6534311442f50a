"""Lightning data modules for classification: the ImageNet folder layout and the generated shapes written in it.

The loader options (``batch_size``, ``num_workers``, ...) are
:class:`mobilenetv2_dense.tasks.datamodule.BaseDataModule`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets.folder import find_classes

from ...datasets.classification.folder import ImageFolderDataset
from ...datasets.classification.shapes import GENERATOR, write_image_folder, written_settings
from ...datasets.classification.transforms import classification_transforms
from ...datasets.synthetic import SHAPE_CLASSES
from ..datamodule import BaseDataModule, rank_zero_print


class ImageFolderDataModule(BaseDataModule):
    """ImageNet folder layout under ``root``: ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``.

    Args:
        root: the dataset folder.
        image_size: training crop and evaluation size (224 for ImageNet).
        crop_scale: area range of the random-resized training crop (Inception's 0.08-1.0).
        check_images: run the set-up check on every image (headers and tails only).
        batch_size: training and evaluation batch.
        **loader_options: :class:`~mobilenetv2_dense.tasks.datamodule.BaseDataModule`'s (``num_workers``,
            ``pin_memory``, ``persistent_workers``, ``mean``, ``std``, ``strict``, ...).
    """

    def __init__(self, root: str = "data/imagenet", image_size: int = 224, *,
                 crop_scale: tuple[float, float] = (0.08, 1.0), check_images: bool = True, batch_size: int = 64,
                 **loader_options: Any) -> None:
        super().__init__(batch_size=batch_size, **loader_options)
        self.root = Path(root)
        self.image_size, self.crop_scale, self.check_images = image_size, crop_scale, check_images

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
            classes=self.class_names, strict=self.strict, check=self.check_images)  # the training split's labels
        if stage == "fit" and self.train_dataset is None:
            self.train_dataset = make("train", True)
        if self.val_dataset is None:
            self.val_dataset = make("val", False)


class ShapesImageFolderDataModule(ImageFolderDataModule):
    """The generated shapes dataset (:func:`mobilenetv2_dense.datasets.classification.shapes.write_image_folder`),
    written to ``root`` in the ImageNet layout on first use (and again over the images of an older generator), then
    read back through :class:`ImageFolderDataModule` exactly as a real dataset is. A folder written with other
    settings is used as it is, with a note. ``**options``: :class:`ImageFolderDataModule`'s and the loader
    options."""

    def __init__(self, root: str = "data/shapes_classification", image_size: int = 64, *, images_per_class: int = 800,
                 seed: int = 0, crop_scale: tuple[float, float] = (0.5, 1.0), batch_size: int = 32,
                 num_workers: int = 2, **options: Any) -> None:
        super().__init__(root, image_size, crop_scale=crop_scale, batch_size=batch_size, num_workers=num_workers,
                         **options)
        self.images_per_class, self.seed = images_per_class, seed

    @property
    def class_names(self) -> list[str]:
        return sorted(SHAPE_CLASSES)  # the order torchvision's find_classes gives the written folders

    def prepare_data(self) -> None:
        written = written_settings(self.root)
        wanted = {"images_per_class": self.images_per_class, "image_size": self.image_size, "seed": self.seed}
        if written is None or written.get("generator") != GENERATOR:
            why = "first use" if written is None else "it held images of an older generator"
            rank_zero_print(f"writing the generated shapes dataset to {self.root} ({why}) ...")
            write_image_folder(self.root, images_per_class=self.images_per_class, image_size=self.image_size,
                               seed=self.seed)
        elif any(written.get(key) != value for key, value in wanted.items()):
            # kept: a folder prepared by hand (as tests do) must not be overwritten by a config's defaults
            rank_zero_print(f"{self.root} was written with {written} and is used as it is; delete it to write "
                            f"{wanted} instead")
        super().prepare_data()
