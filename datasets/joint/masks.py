"""Semantic masks from COCO instance annotations: polygons and RLEs through pycocotools, one label per pixel.

A COCO ``segmentation`` is a list of polygons (``[[x0, y0, x1, y1, ...], ...]``, the usual form for single
objects), an uncompressed RLE (``{"size": [h, w], "counts": [ints]}``, the usual form for crowds) or a compressed
RLE (``counts`` a string). :func:`outline_rle` turns each into pycocotools' RLE exactly as ``COCO.annToRLE`` does
(``frPyObjects``, polygons merged), and :func:`semantic_mask` decodes an image's outlines at once and composes them:

- 0 where no object is, the object's label (1..K) where one object or objects of one class are;
- 255 (void, ignored by the loss and the metrics) where objects of different classes overlap (which of them is
  right is unknown; torchvision's COCO segmentation reference voids overlaps too);
- 255 over a crowd region (``iscrowd=1``) where no single object is annotated: a crowd's outline covers the gaps
  between its members, so its pixels cannot be labelled; an individually annotated member inside keeps its label;
- 255 inside the box of an object whose outline cannot be used (missing or malformed, see :func:`outline_problem`):
  the object is there, its pixels are unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

VOID = 255


def outline_problem(segmentation: object, height: int, width: int) -> str | None:
    """Why a COCO ``segmentation`` cannot be drawn on an ``height x width`` image, or ``None`` when it can.

    Checks what pycocotools would otherwise get wrong silently: a polygon of fewer than 3 points (4 numbers are
    even read as a box), an odd coordinate count, non-numbers, an RLE of another size than the image, an
    uncompressed RLE whose run lengths do not add up to its size.
    """
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return "no segmentation"
    if isinstance(segmentation, list):
        for k, polygon in enumerate(segmentation):
            if not isinstance(polygon, list) or not all(isinstance(v, int | float) for v in polygon):
                return f"polygon {k} is not a list of numbers"
            if len(polygon) < 6 or len(polygon) % 2:
                return f"polygon {k} has {len(polygon)} coordinates; a polygon needs x, y pairs of 3 points or more"
        return None
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        return "segmentation is neither a list of polygons nor an RLE dict with 'size' and 'counts'"
    size = segmentation["size"]
    if not isinstance(size, list | tuple) or not all(isinstance(v, int | float) for v in size) or \
            [int(v) for v in size] != [height, width]:
        return f"RLE size {size} differs from the image's {[height, width]} (height, width)"
    counts = segmentation["counts"]
    if isinstance(counts, list) and sum(counts) != height * width:
        return f"uncompressed RLE run lengths add up to {sum(counts)} pixels, not {height} x {width}"
    if not isinstance(counts, list | str | bytes):
        return f"RLE counts of type {type(counts).__name__}; expected a list of ints or a string"
    return None


def outline_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """pycocotools' RLE of a COCO ``segmentation`` on an ``height x width`` image (``COCO.annToRLE``'s logic)."""
    if isinstance(segmentation, list):  # polygons: one RLE each, merged into the object's
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):  # uncompressed RLE (crowds)
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation  # compressed RLE


def semantic_mask(annotations: Iterable[Mapping], height: int, width: int, cat_id_to_label: Mapping[int, int], *,
                  unusable: Sequence[int] | set[int] = ()) -> np.ndarray:
    """``(height, width)`` uint8 labels of one image from its COCO annotations (see the module docstring).

    Args:
        annotations: the image's annotations (``category_id``, ``segmentation``, ``iscrowd``, ``bbox``, ``id``).
        height, width: the image's size (the file's).
        cat_id_to_label: category id -> label 1..K; annotations of other categories are left out.
        unusable: ids of annotations whose outline failed :func:`outline_problem`: void inside their box.
    """
    out = np.zeros((height, width), dtype=np.uint8)
    rles, labels, crowd, void_boxes = [], [], [], []
    for ann in annotations:  # one RLE per object: pycocotools converts an object's polygons at a time
        label = cat_id_to_label.get(ann.get("category_id"))
        if label is None:
            continue
        if ann.get("id") in unusable:
            void_boxes.append(ann.get("bbox"))
            continue
        rles.append(outline_rle(ann["segmentation"], height, width))
        labels.append(label)
        crowd.append(bool(ann.get("iscrowd", 0)))
    if rles:
        masks = mask_utils.decode(rles).astype(bool)  # (H, W, n), every object at once
        labels_, crowd_ = np.asarray(labels, dtype=np.int64), np.asarray(crowd, dtype=bool)
        objects = masks[..., ~crowd_]  # (H, W, n_objects)
        object_labels = labels_[~crowd_]
        covered = objects.any(-1)
        highest = np.where(objects, object_labels, 0).max(-1, initial=0)  # (H, W)
        lowest = np.where(objects, object_labels, VOID).min(-1, initial=VOID)
        out[covered] = highest[covered]
        out[covered & (lowest != highest)] = VOID  # objects of two classes claim the pixel
        out[masks[..., crowd_].any(-1) & ~covered] = VOID
    for box in void_boxes:  # a handful per image at most
        if isinstance(box, list | tuple) and len(box) == 4:
            x, y, w, h = box
            out[max(0, int(y)):max(0, int(np.ceil(y + h))), max(0, int(x)):max(0, int(np.ceil(x + w)))] = VOID
    return out
