"""Classification augmentation with albumentations: Inception-style crops for training, centre crops for evaluation."""

from __future__ import annotations

import albumentations as A
from albumentations.pytorch import ToTensorV2

from ..images import IMAGENET_MEAN, IMAGENET_STD


def classification_transforms(image_size: int, *, train: bool, crop_scale: tuple[float, float] = (0.08, 1.0),
                              mean: tuple[float, ...] = IMAGENET_MEAN,
                              std: tuple[float, ...] = IMAGENET_STD) -> A.Compose:
    """Inception-style random-resized crop + flip for training; resize to 1/0.875 + centre crop for evaluation."""
    if train:
        geometry = [A.RandomResizedCrop(size=(image_size, image_size), scale=crop_scale), A.HorizontalFlip()]
    else:
        geometry = [A.SmallestMaxSize(max_size=int(round(image_size / 0.875))),
                    A.CenterCrop(height=image_size, width=image_size)]
    return A.Compose([*geometry, A.Normalize(mean=mean, std=std), ToTensorV2()])
