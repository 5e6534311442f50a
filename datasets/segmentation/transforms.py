"""DeepLab's training augmentation and full-resolution evaluation, with albumentations (mask-safe).

Training (TF DeepLab ``input_preprocess.preprocess_image_and_label``): random scale 0.5-2.0, pad to the crop size
with the mean pixel (label 255), random crop, random left-right flip; then normalise.
Evaluation: normalise only; the image keeps its size and ``segmentation_collate`` pads batches.
"""

from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from ..images import IMAGENET_MEAN, IMAGENET_STD
from .voc import IGNORE_INDEX


def train_transforms(*, crop_size: int = 512, scale_range: tuple[float, float] = (0.5, 2.0),
                     mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> A.Compose:
    """Random scale, pad, crop ``crop_size`` x ``crop_size``, flip, normalise.

    Call as ``t(image=(H, W, 3) uint8, mask=(H, W) uint8)``; returns ``image`` float ``(3, S, S)`` and ``mask``
    uint8 ``(S, S)``. ``RandomScale`` multiplies both sides by one factor as DeepLab does (``LongestMaxSize`` /
    ``Affine`` would fix the output size or rotate around the centre); masks use nearest-neighbour resizing.
    """
    low, high = scale_range
    mean_pixel = tuple(255.0 * m for m in mean)  # pads normalise to exactly 0, the value collate pads with
    return A.Compose([
        # ``scale_limit`` is added to 1: (-0.5, 1.0) draws the factor uniformly from [0.5, 2.0] (TF DeepLab
        # draws from the 0.25 steps of that range; PyTorch reproductions use the continuous range, as here).
        A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        # DeepLab pads at the bottom and right (``pad_to_bounding_box(..., 0, 0, ...)``): image at top-left.
        A.PadIfNeeded(min_height=crop_size, min_width=crop_size, position="top_left",
                      border_mode=cv2.BORDER_CONSTANT, fill=mean_pixel, fill_mask=IGNORE_INDEX),
        A.RandomCrop(height=crop_size, width=crop_size),
        A.HorizontalFlip(p=0.5),
        A.Normalize(mean=mean, std=std),
        ToTensorV2(),
    ])


def eval_transforms(*, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> A.Compose:
    """Normalise only: ``image`` float ``(3, H, W)`` at the original size, ``mask`` uint8 ``(H, W)`` untouched."""
    return A.Compose([A.Normalize(mean=mean, std=std), ToTensorV2()])
