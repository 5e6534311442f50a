"""Classification data: the ImageNet folder layout, its transforms, and the generated shapes written in it."""

from mobilenetv2_dense.datasets.classification.folder import ImageFolderDataset
from mobilenetv2_dense.datasets.classification.shapes import write_image_folder
from mobilenetv2_dense.datasets.classification.transforms import classification_transforms

__all__ = ["ImageFolderDataset", "classification_transforms", "write_image_folder"]
