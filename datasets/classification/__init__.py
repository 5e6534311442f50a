"""Classification data: the ImageNet folder layout, its transforms, and the generated shapes written in it."""

from .folder import ImageFolderDataset
from .shapes import write_image_folder
from .transforms import classification_transforms

__all__ = ["ImageFolderDataset", "classification_transforms", "write_image_folder"]
