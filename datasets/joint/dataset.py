"""What the joint datasets share: a detection dataset whose items also carry the image's semantic mask.

An item is ``(image, target)`` with the detection contract's target (``boxes`` (M, 4) xyxy, ``labels`` (M,) in
1..K, ``image_id``, ``orig_size``; see ``datasets/detection/dataset.py``) plus ``mask``: int64 labels 0..K (0 the
background, label k the detector's class k) and 255 for void. With a training transform the mask is ``(S, S)``,
augmented with the image; with an evaluation transform it stays ``(h, w)`` at the original size (see
``transforms.py``). Batches are ``detection_collate``'s: stacked images, a list of targets.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class JointDataset:
    """Mixin before a :class:`~mobilenetv2_dense.datasets.detection.dataset.DetectionDataset`: subclasses give
    :meth:`semantic_mask`; the transform must have ``with_mask`` (:class:`~mobilenetv2_dense.datasets.joint.
    transforms.JointTransform`)."""

    def semantic_mask(self, j: int, size: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` uint8 labels of image ``j``, whose decoded size is ``size = (H, W)``."""
        raise NotImplementedError

    def sample(self, j: int, image: np.ndarray) -> tuple[Tensor | np.ndarray, dict]:
        boxes, labels = self.training_boxes(j)
        mask = self.semantic_mask(j, image.shape[:2])
        target = {"image_id": int(self.index.image_ids[j]),
                  "orig_size": torch.as_tensor(image.shape[:2], dtype=torch.int64)}
        if self.transform is None:
            return image, {"boxes": torch.from_numpy(boxes.copy()), "labels": torch.from_numpy(labels.copy()),
                           "mask": torch.from_numpy(mask).long(), **target}
        image, boxes, labels, mask = self.transform.with_mask(image, boxes, labels, mask)
        return image, {"boxes": boxes, "labels": labels, "mask": mask, **target}
