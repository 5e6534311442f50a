"""One augmentation for an image, its boxes and its semantic mask: SSD's recipe, applied to all three alike.

albumentations moves boxes and masks with the image in one call (flip, zoom out, crop, resize), so a box and its
object's pixels never part. Training runs the detector's recipe (``datasets/detection/transforms.py``): the joint
model's input is the detector's fixed ``S x S``; the mask is resized with nearest neighbours and the zoom-out canvas
is void (255). Evaluation resizes the image (and boxes) only: the mask stays at the original size, where the
segmentation metrics are computed after the logits are resized back, as the detections are scaled back for COCO.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch import Tensor

from ..detection.transforms import DetectionAugment, DetectionTransform, ssd_augmentation
from ..images import IMAGENET_MEAN, IMAGENET_STD


class JointTransform(DetectionTransform):
    """A :class:`~mobilenetv2_dense.datasets.detection.transforms.DetectionTransform` (called with an image, boxes
    and labels it is one) that also carries a mask: :meth:`with_mask`.

    Args:
        transforms: the albumentations steps.
        mean, std: normalisation (fractions of 255).
        mask_follows: apply the steps to the mask too (training); ``False`` hands the mask back untouched
            (evaluation: scored at the original size).
    """

    def __init__(self, transforms: list[A.BasicTransform], *, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, mask_follows: bool = True) -> None:
        super().__init__(transforms, mean=mean, std=std)
        self.mask_follows = mask_follows

    def with_mask(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, mask: np.ndarray
                  ) -> tuple[Tensor | np.ndarray, Tensor, Tensor, Tensor]:
        """``(image (H, W, 3) uint8, boxes (M, 4) xyxy, labels (M,), mask (H, W) uint8)`` -> ``(image, boxes (M', 4),
        labels (M',), mask)``: the mask ``(S, S)`` int64 with the image when ``mask_follows``, else ``(H, W)``."""
        if mask.shape != image.shape[:2]:
            raise ValueError(f"JointTransform: mask {mask.shape} and image {image.shape[:2]} differ in size; a mask "
                             "must label the image's pixels one for one")
        inputs = {"image": image, "bboxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                  "labels": np.asarray(labels, dtype=np.int64)}
        out = self.compose(**inputs, mask=mask) if self.mask_follows else self.compose(**inputs)
        image, boxes, labels = self.outputs(out)
        mask = out["mask"] if self.mask_follows else mask
        return image, boxes, labels, torch.from_numpy(np.ascontiguousarray(mask)).long()


def joint_train_transform(*, image_size: int = 320, mean: tuple[float, ...] = IMAGENET_MEAN,
                          std: tuple[float, ...] = IMAGENET_STD, augment: DetectionAugment | None = None
                          ) -> JointTransform:
    """SSD's training augmentation on image, boxes and mask alike, ending in ``(3, S, S)`` and ``(S, S)``."""
    return JointTransform(ssd_augmentation(image_size=image_size, mean=mean, augment=augment), mean=mean, std=std)


def joint_eval_transform(*, image_size: int = 320, mean: tuple[float, ...] = IMAGENET_MEAN,
                         std: tuple[float, ...] = IMAGENET_STD) -> JointTransform:
    """Resize the image to ``S x S`` and normalise; boxes follow, the mask keeps the original size."""
    return JointTransform([A.Resize(image_size, image_size)], mean=mean, std=std, mask_follows=False)
