"""COCO-format detection data read with pycocotools (COCO 2017 or any custom COCO-format json)."""

from __future__ import annotations

import contextlib
import io
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from ..checks import DatasetError, DatasetReport
from .dataset import DetectionDataset, Transform, build_index


def coco_dataset(coco_gt: Any) -> dict:
    """The COCO ground-truth dict from a COCO object (either library), a dict or a JSON path."""
    if isinstance(coco_gt, dict):
        return coco_gt
    if isinstance(coco_gt, (str, Path)):
        with open(coco_gt) as handle:
            return json.load(handle)
    if hasattr(coco_gt, "dataset"):
        return coco_gt.dataset
    raise TypeError(f"coco_dataset: coco_gt must be a COCO object, a dict or a JSON path, got {type(coco_gt)}")


def load_coco(annotations: str | Path) -> COCO:
    """The pycocotools ``COCO`` object of a json file (quietly; a broken file raises naming it)."""
    annotations = Path(annotations)
    if not annotations.is_file():
        raise FileNotFoundError(f"COCO annotations {str(annotations)!r} not found; pass the instances_*.json path")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco = COCO(str(annotations))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise DatasetError(f"{str(annotations)!r} is not a COCO instances json ({type(error).__name__}: {error}); "
                           "it needs 'images', 'annotations' and 'categories' lists") from error
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.dataset.get(key), list):
            raise DatasetError(f"{str(annotations)!r} has no {key!r} list; a COCO instances json needs "
                               "'images', 'annotations' and 'categories'")
    return coco


class COCODetection(DetectionDataset):
    """A COCO-format split: ``images`` folder + instances ``annotations`` json.

    Category ids (1..90 with gaps in COCO) map to contiguous labels 1..K in id order (0 is background):
    ``cat_id_to_label`` and ``label_to_cat_id``; ``class_names[label - 1]``. Crowd annotations stay in the index
    flagged ``ignore`` (left out of training targets; the evaluator reads them from the json); images without
    annotations are kept as negatives. The set-up check (see
    :func:`mobilenetv2_dense.datasets.detection.dataset.build_index`) prints a
    summary; ``strict=True`` raises :class:`mobilenetv2_dense.datasets.checks.DatasetError` on any problem.

    Only the index (a few numpy arrays) is kept from the set-up. :attr:`coco`, the json as a Python object per image
    and annotation, is read again when asked for, which only the evaluation ground truth (the val split) is: kept
    for a training split, those objects would sit in the training process for the whole run and be copied page by
    page into its forked loader workers as reference counts and the garbage collector write to them.
    """

    keeps_coco = False  # True: keep the set-up's COCO object as :attr:`coco` (a subclass reading it per sample)

    def __init__(self, images: str | Path, annotations: str | Path, *, transform: Transform | None = None,
                 strict: bool = False) -> None:
        self.annotation_file = Path(annotations)
        images = Path(images)
        if not images.is_dir():
            raise FileNotFoundError(f"COCO images folder {str(images)!r} not found (for {self.annotation_file})")
        coco = load_coco(annotations)
        if self.keeps_coco:
            self.__dict__["coco"] = coco  # the cached_property's slot: not read twice
        categories = sorted(coco.dataset["categories"], key=lambda c: c["id"])
        self.cat_id_to_label = {int(c["id"]): label for label, c in enumerate(categories, start=1)}
        self.label_to_cat_id = {label: cat for cat, label in self.cat_id_to_label.items()}
        self.class_names = [str(c["name"]) for c in categories]

        image_infos = sorted(coco.dataset["images"], key=lambda im: im["id"])
        image_ids = np.array([im["id"] for im in image_infos], dtype=np.int64)
        listed = np.array([(im.get("height", 0), im.get("width", 0)) for im in image_infos], dtype=np.int64)
        anns = coco.dataset["annotations"]
        xywh = np.array([_bbox(a) for a in anns], dtype=np.float64).reshape(-1, 4)
        ann_image = np.array([a.get("image_id", -1) for a in anns], dtype=np.int64)
        ann_cat = np.array([a.get("category_id", -1) for a in anns], dtype=np.int64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        ann_ids = np.array([f"annotation {a.get('id', '?')}" for a in anns], dtype=str)

        # Vectorised look-ups: category id -> label through a table, image id -> row through a sorted search.
        table = np.zeros(max([0, *self.cat_id_to_label]) + 2, dtype=np.int64)
        table[list(self.cat_id_to_label)] = list(self.cat_id_to_label.values())
        labels = table[np.clip(ann_cat, 0, len(table) - 1)] * (ann_cat >= 0)
        row = np.searchsorted(image_ids, ann_image)
        found = row < len(image_ids)
        found[found] = image_ids[row[found]] == ann_image[found]
        box_image = np.where(found, row, -1)
        # [x, y, w, h] -> xyxy in numpy (float64), as the whole index is built; box_convert would need tensors
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)

        report = DatasetReport(f"COCO {self.annotation_file.name}")
        index = build_index(report, files=[str(images / im["file_name"]) for im in image_infos],
                            image_ids=image_ids, listed_sizes=listed, box_image=box_image, boxes=xyxy,
                            labels=labels, ignore=crowd, box_names=ann_ids)
        report.finish(strict, fix=f"Fix or remove the entries in {self.annotation_file}, or pass strict=False to "
                                  "skip broken images and drop bad boxes.")
        super().__init__(index, transform=transform)

    @cached_property
    def coco(self) -> COCO:
        """The pycocotools ``COCO`` of ``annotation_file`` (crowd annotations included, as COCOeval expects), read
        on first use."""
        return load_coco(self.annotation_file)


def _bbox(annotation: dict) -> list[float]:
    """The ``[x, y, w, h]`` of an annotation; a missing or malformed one becomes zero-area (reported, dropped)."""
    box = annotation.get("bbox")
    return box if isinstance(box, list | tuple) and len(box) == 4 else [0.0, 0.0, 0.0, 0.0]
