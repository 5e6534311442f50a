"""Classification (backbone pre-training) on the ImageNet folder layout."""

from mobilenetv2_dense.tasks.classification.data import (
    ImageFolderDataModule,
    ImageFolderDataset,
    ShapesImageFolderDataModule,
    classification_transforms,
)
from mobilenetv2_dense.tasks.classification.module import ClassificationTask

__all__ = [
    "ClassificationTask",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "ShapesImageFolderDataModule",
    "classification_transforms",
]
