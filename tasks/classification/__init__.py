"""Classification (backbone pre-training) on the ImageNet folder layout."""

from .datamodule import ImageFolderDataModule, ShapesImageFolderDataModule
from .module import ClassificationTask

__all__ = [
    "ClassificationTask",
    "ImageFolderDataModule",
    "ShapesImageFolderDataModule",
]
