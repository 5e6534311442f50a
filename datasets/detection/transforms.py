"""Box-safe augmentation for SSD training, built on albumentations 2.x.

The recipe is SSD's (Liu et al. 2016, Sec. 2.2 "Data augmentation"; torchvision's ``references/detection``):
photometric distortion -> zoom out onto a mean-filled canvas -> min-IoU random crop -> horizontal flip ->
resize to ``S x S`` -> normalise (see :class:`DetectionTransform`). Evaluation only resizes and normalises, so
predictions map back to the original image by scaling (the detection contract: no letterbox).

Boxes are ``pascal_voc`` (``x0, y0, x1, y1`` in pixels), the same xyxy the datasets and the model use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import albumentations as A
import numpy as np
import torch
from albumentations.augmentations.crops import functional as fcrops
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.augmentations.geometric import functional as fgeometric
from albumentations.core.bbox_utils import denormalize_bboxes, normalize_bboxes
from albumentations.core.transforms_interface import DualTransform
from torch import Tensor

from ..images import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class DetectionAugment:
    """Which parts of the SSD training recipe to use (all on by default).

    torchvision's SSDLite recipe uses only ``min_iou_crop`` and ``hflip``; the original SSD adds the
    photometric distortion and a zoom out of up to 4x (``max_zoom=1`` turns zoom out off).
    """

    photometric: bool = True
    max_zoom: float = 4.0
    zoom_p: float = 0.5
    min_iou_crop: bool = True
    hflip: bool = True

    def __post_init__(self) -> None:
        if self.max_zoom < 1:
            raise ValueError(f"augment.max_zoom must be >= 1 (1 turns zoom out off), got {self.max_zoom}")


# Data modules built in Python keep a DetectionAugment in their hyper-parameters: checkpoints load with weights_only.
torch.serialization.add_safe_globals([DetectionAugment])


class ZoomOut(DualTransform):
    """Place the image at a random spot of a canvas ``r`` times its size, ``r ~ U(1, max_scale)`` (SSD "expand").

    albumentations 2.0.8 has no such transform: ``Pad`` / ``PadIfNeeded`` pad by fixed amounts or to a fixed
    size, and ``Affine(scale<1)`` keeps the output size (it shrinks, it does not enlarge the canvas).
    The canvas is filled with ``fill`` (the dataset mean, so the border normalises to about zero); a segmentation
    mask's canvas with ``fill_mask`` (255: void, the canvas is not part of the scene).
    """

    def __init__(self, max_scale: float = 4.0, fill: tuple[float, ...] | float = 0, fill_mask: int = 255,
                 p: float = 0.5) -> None:
        super().__init__(p=p)
        self.max_scale = max_scale
        self.fill = fill
        self.fill_mask = fill_mask

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        scale = self.py_random.uniform(1.0, self.max_scale)
        canvas_h, canvas_w = int(height * scale), int(width * scale)
        left = self.py_random.randint(0, canvas_w - width)
        top = self.py_random.randint(0, canvas_h - height)
        return {"pad_top": top, "pad_bottom": canvas_h - height - top, "pad_left": left,
                "pad_right": canvas_w - width - left}

    def apply(self, img: np.ndarray, pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
              **params: Any) -> np.ndarray:
        return fgeometric.pad_with_params(img, pad_top, pad_bottom, pad_left, pad_right,
                                          border_mode=0, value=self.fill)  # 0 = cv2.BORDER_CONSTANT

    def apply_to_mask(self, mask: np.ndarray, pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
                      **params: Any) -> np.ndarray:
        return fgeometric.pad_with_params(mask, pad_top, pad_bottom, pad_left, pad_right,
                                          border_mode=0, value=self.fill_mask)

    def apply_to_bboxes(self, bboxes: np.ndarray, pad_top: int, pad_bottom: int, pad_left: int, pad_right: int,
                        **params: Any) -> np.ndarray:
        # albumentations hands boxes over normalised to the input shape and expects them normalised to the output
        height, width = params["shape"][:2]
        pixels = denormalize_bboxes(bboxes, (height, width))
        pixels[:, :4] += np.array([pad_left, pad_top, pad_left, pad_top], dtype=pixels.dtype)
        return normalize_bboxes(pixels, (height + pad_top + pad_bottom, width + pad_left + pad_right))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_scale", "fill", "fill_mask")


class MinIoURandomCrop(BaseCrop):
    """SSD's sampled crop: pick a minimum IoU from ``{no crop, 0.1, 0.3, 0.5, 0.7, 0.9, any}``, then draw a patch
    of ``[min_scale, 1]`` of each side with aspect ratio in ``[1/2, 2]`` whose IoU with some box reaches it.

    albumentations 2.0.8 has nothing equivalent: ``RandomSizedBBoxSafeCrop`` / ``BBoxSafeRandomCrop`` keep *all*
    boxes (never cut an object, so no partial-object crops), and ``AtLeastOneBBoxRandomCrop`` takes a fixed crop
    size with no IoU constraint. Like Caffe SSD and torchvision's ``RandomIoUCrop``, the ``trials`` candidates are
    drawn at once and the first valid one is used (none valid: no crop); boxes whose centre falls outside the
    patch are dropped, the rest clipped. An image without boxes gets an unconstrained random patch.
    """

    def __init__(self, min_ious: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9), min_scale: float = 0.3,
                 trials: int = 50, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.min_ious = min_ious
        self.min_scale = min_scale
        self.trials = trials

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        whole = (0, 0, width, height)
        # options: None = keep the whole image, 0.0 = any patch
        option = self.py_random.choice([None, *self.min_ious, 0.0])
        if option is None:
            return {"crop_coords": whole}
        rng = self.random_generator
        w = rng.uniform(self.min_scale, 1.0, self.trials) * width  # (T,)
        h = rng.uniform(self.min_scale, 1.0, self.trials) * height
        x0 = rng.uniform(0.0, 1.0, self.trials) * (width - w)
        y0 = rng.uniform(0.0, 1.0, self.trials) * (height - h)
        # whole pixels before the checks, so the patch that is cut is the one that met the constraint
        patches = np.floor(np.stack([x0, y0, x0 + w, y0 + h], axis=1))  # (T, 4)
        w, h = patches[:, 2] - patches[:, 0], patches[:, 3] - patches[:, 1]
        valid = (w >= 1) & (h >= 1) & (h >= 0.5 * w) & (h <= 2.0 * w)
        boxes = np.asarray(data.get("bboxes", np.zeros((0, 4))))
        if len(boxes):
            boxes = denormalize_bboxes(boxes, (height, width))[:, :4]  # (M, 4) pixels
            valid &= _centres_inside(boxes, patches).any(axis=1)
            valid &= _iou(patches, boxes).max(axis=1) >= option
        if not valid.any():
            return {"crop_coords": whole}
        return {"crop_coords": tuple(int(v) for v in patches[int(np.argmax(valid))])}

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int],
                        **params: Any) -> np.ndarray:
        height, width = params["shape"][:2]
        if not len(bboxes) or crop_coords == (0, 0, width, height):
            return bboxes
        pixels = denormalize_bboxes(bboxes, (height, width))[:, :4]
        keep = _centres_inside(pixels, np.asarray([crop_coords], dtype=np.float64))[0]  # (M,)
        return fcrops.crop_bboxes_by_coords(bboxes[keep], crop_coords, (height, width))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_ious", "min_scale", "trials")


def _centres_inside(boxes: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """``(T, M)`` bool: centre of box m inside patch t. ``boxes`` (M, 4), ``patches`` (T, 4), both xyxy."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2  # (M,)
    return ((cx[None] > patches[:, :1]) & (cx[None] < patches[:, 2:3])
            & (cy[None] > patches[:, 1:2]) & (cy[None] < patches[:, 3:4]))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(T, M)`` IoU of xyxy boxes ``a`` (T, 4) and ``b`` (M, 4) (numpy: this runs inside data workers)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (T, M, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None] - inter)


class DetectionTransform:
    """``(image (H, W, 3) uint8, boxes (M, 4) xyxy, labels (M,)) -> (image, boxes (M', 4) float32 in output pixels,
    labels (M',) int64)``; boxes cut away are dropped with their labels.

    With ``mean`` and ``std`` (fractions of 255) the image comes out ``(3, S, S)`` float32, normalised and
    contiguous; without, as the albumentations pipeline leaves it. Normalising here rather than with
    ``A.Normalize`` + ``ToTensorV2`` transposes the uint8 image (a quarter of the bytes) and hands
    ``detection_collate`` contiguous tensors: stacking the strided views ToTensorV2 returns cost more CPU than
    the whole augmentation.
    """

    def __init__(self, transforms: list[A.BasicTransform], *, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None) -> None:
        # clip: guards against float rounding just past the edge; min_area: drops slivers left by the crop
        params = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_area=1.0, clip=True)
        self.compose = A.Compose(transforms, bbox_params=params)
        self.scale = self.shift = None
        if mean is not None and std is not None:
            # (x / 255 - mean) / std == x * scale + shift, per channel, shaped (3, 1, 1) for CHW
            mean_a, std_a = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
            self.scale, self.shift = (1 / (255 * std_a)).reshape(3, 1, 1), (-mean_a / std_a).reshape(3, 1, 1)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
                 ) -> tuple[Tensor | np.ndarray, Tensor, Tensor]:
        return self.outputs(self.compose(image=image, bboxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                                         labels=np.asarray(labels, dtype=np.int64)))

    def outputs(self, out: dict) -> tuple[Tensor | np.ndarray, Tensor, Tensor]:
        """The composed pipeline's ``out`` dict -> ``(image, boxes, labels)`` as :meth:`__call__` returns them."""
        boxes = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4))
        labels = torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1))
        image = out["image"]
        if self.scale is not None:
            # (S, S, 3) uint8 -> (3, S, S) float32 in one contiguous (and writable) copy, normalised in place.
            # numpy, not torch: per-sample torch ops use intra-op threads, which on a busy CPU cost 10x more.
            chw = image.transpose(2, 0, 1).astype(np.float32)
            chw *= self.scale
            chw += self.shift
            image = torch.from_numpy(chw)
        return image, boxes, labels

    def set_random_seed(self, seed: int) -> None:
        """Reseed (each DataLoader worker must, or forked workers repeat the same augmentations)."""
        self.compose.set_random_seed(seed)

    def __repr__(self) -> str:
        return f"DetectionTransform({self.compose!r})"


def train_transform(*, image_size: int = 320, mean: tuple[float, ...] = IMAGENET_MEAN,
                    std: tuple[float, ...] = IMAGENET_STD, augment: DetectionAugment | None = None
                    ) -> DetectionTransform:
    """SSD training augmentation ending in ``(3, image_size, image_size)`` normalised tensors."""
    return DetectionTransform(ssd_augmentation(image_size=image_size, mean=mean, augment=augment), mean=mean, std=std)


def ssd_augmentation(*, image_size: int, mean: tuple[float, ...], augment: DetectionAugment | None = None
                     ) -> list[A.BasicTransform]:
    """The albumentations steps of :func:`train_transform`, up to and including the resize to ``image_size``."""
    augment = augment or DetectionAugment()
    steps: list[A.BasicTransform] = []
    if augment.photometric:
        # SSD: brightness +-32 (additive), then contrast and saturation x[0.5, 1.5] and hue +-18 degrees,
        # each with probability 1/2; ColorJitter applies its three in random order (SSD's contrast first or last)
        steps += [A.RandomBrightnessContrast(brightness_limit=32 / 255, contrast_limit=0.0, p=0.5),
                  A.ColorJitter(brightness=0.0, contrast=0.5, saturation=0.5, hue=18 / 360, p=0.5)]
    if augment.max_zoom > 1:
        steps.append(ZoomOut(max_scale=augment.max_zoom, fill=tuple(255 * m for m in mean), p=augment.zoom_p))
    if augment.min_iou_crop:
        steps.append(MinIoURandomCrop())
    if augment.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    return [*steps, A.Resize(image_size, image_size)]


def eval_transform(*, image_size: int = 320, mean: tuple[float, ...] = IMAGENET_MEAN,
                   std: tuple[float, ...] = IMAGENET_STD) -> DetectionTransform:
    """Resize to ``(image_size, image_size)`` (no letterbox) and normalise."""
    return DetectionTransform([A.Resize(image_size, image_size)], mean=mean, std=std)
