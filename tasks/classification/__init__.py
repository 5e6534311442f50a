"""Classification (backbone pre-training) on the ImageNet folder layout."""

from tasks.classification.data import (
    ImageFolderDataModule,
    ImageFolderDataset,
    ShapesImageFolderDataModule,
    classification_transforms,
)
from tasks.classification.module import ClassificationTask

__all__ = [
    "ClassificationTask",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "ShapesImageFolderDataModule",
    "classification_transforms",
]
