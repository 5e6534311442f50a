"""COCO instances (COCO 2017 or any COCO-format json with ``segmentation``) as boxes + semantic masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checks import DatasetReport
from ..detection.coco import COCODetection
from ..detection.dataset import Transform
from .dataset import JointDataset
from .masks import outline_problem, semantic_mask


class COCOJoint(JointDataset, COCODetection):
    """A COCO-format split with a semantic mask per image, drawn from the instances' outlines
    (:func:`mobilenetv2_dense.datasets.joint.masks.semantic_mask`): background 0, category labels 1..K as the
    detector's (``cat_id_to_label``), void 255 over crowds, class overlaps and unusable outlines.

    The set-up check is :class:`COCODetection`'s (images, boxes, categories) and then one over the outlines: a
    missing or malformed ``segmentation`` (see :func:`~mobilenetv2_dense.datasets.joint.masks.outline_problem`)
    is reported naming the file and the annotation, and that object is void inside its box; ``strict=True``
    raises :class:`~mobilenetv2_dense.datasets.checks.DatasetError` instead.
    """

    keeps_coco = True  # semantic_mask reads each image's annotations from it

    def __init__(self, images: str | Path, annotations: str | Path, *, transform: Transform | None = None,
                 strict: bool = False) -> None:
        super().__init__(images, annotations, transform=transform, strict=strict)
        index, coco = self.index, self.coco
        row_of = {int(i): r for r, i in enumerate(index.image_ids)}
        report = DatasetReport(f"COCO {self.annotation_file.name} outlines (semantic masks)")
        unusable, checked = set(), 0
        for ann in coco.dataset["annotations"]:  # once at set-up; the masks themselves are drawn per image
            row = row_of.get(ann.get("image_id"))
            if row is None or ann.get("category_id") not in self.cat_id_to_label:
                continue  # an image left out, or a box COCODetection already reported
            checked += 1
            problem = outline_problem(ann.get("segmentation"), *(int(v) for v in index.sizes[row]))
            if problem:
                unusable.add(ann.get("id"))
                kind = "object without a segmentation" if problem == "no segmentation" else "unusable outline"
                report.add(f"{kind} (void inside its box)", str(index.files[row]),
                           f"annotation {ann.get('id')}: {problem}")
        report.counts.update({"outlines": checked, "void inside their box": len(unusable)})
        report.finish(strict, fix=f"Give those annotations in {self.annotation_file} a 'segmentation' (polygons or an "
                                  "RLE of the image's size), or pass strict=False to treat their boxes as void.")
        self.unusable_outlines = frozenset(unusable)

    def semantic_mask(self, j: int, size: tuple[int, int]) -> np.ndarray:
        annotations = self.coco.imgToAnns.get(int(self.index.image_ids[j]), [])
        return semantic_mask(annotations, *size, self.cat_id_to_label, unusable=self.unusable_outlines)
