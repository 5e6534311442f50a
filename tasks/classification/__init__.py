"""Classification (backbone pre-training) on the ImageNet folder layout."""

from mobilenetv2_dense.tasks.classification.datamodule import ImageFolderDataModule, ShapesImageFolderDataModule
from mobilenetv2_dense.tasks.classification.module import ClassificationTask

__all__ = [
    "ClassificationTask",
    "ImageFolderDataModule",
    "ShapesImageFolderDataModule",
]
