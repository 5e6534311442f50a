"""PASCAL VOC detection (``VOCdevkit/VOC2007`` or ``VOC2012``) and its COCO-format ground truth for COCOeval."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pycocotools.coco import COCO

from ..checks import DatasetReport
from ..voc import VOC_CLASSES
from .dataset import DetectionDataset, Transform, build_index

_CORNERS = ("xmin", "ymin", "xmax", "ymax")


class VOCAnnotation(NamedTuple):
    """One VOC annotation file. ``size`` is ``(H, W)`` as stated, ``(0, 0)`` when missing (the file's size is then
    used); ``names``, ``boxes`` (M, 4) float64, ``difficult`` (M,) bool and ``numbers`` (each object's position in
    the file, for messages) cover the well-formed objects only."""

    size: tuple[int, int]
    names: list[str]
    boxes: np.ndarray
    difficult: np.ndarray
    numbers: list[int]


def _number(text: str | None) -> float | None:
    """A coordinate or size as written, ``None`` when missing, empty or not a finite number."""
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_voc_xml(path: str | Path, report: DatasetReport | None = None) -> VOCAnnotation:
    """One VOC annotation file -> :class:`VOCAnnotation`, boxes as 0-based xyxy pixel edges.

    VOC corners are 1-based inclusive pixel indices; the boxes returned are ``(x1 - 1, y1 - 1, x2, y2)``, so a
    box covering pixel columns 1..10 is 10 pixels wide. Fractional corners ("273.5", written by many VOC-format
    exporters) are kept as they are. An object without ``<bndbox>`` or with a missing or non-numeric corner is
    left out and recorded in ``report`` naming the file (``ValueError`` without a report); a missing ``<size>``
    gives ``(0, 0)``, recorded in ``report`` when given, and the image file's size is used.
    """
    root = ET.parse(path).getroot()

    size = root.find("size")
    height, width = (None, None) if size is None else (_number(size.findtext("height")),
                                                       _number(size.findtext("width")))
    stated = (0, 0)
    if height and width and height > 0 and width > 0:
        stated = (int(round(height)), int(round(width)))
    elif report is not None:
        report.add("annotation without a usable <size> (image file's size used)", str(path),
                   "no <size>" if size is None else "<size> without positive <height> and <width>")
    names, corners, difficult, numbers = [], [], [], []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        values = [None] * 4 if box is None else [_number(box.findtext(c)) for c in _CORNERS]
        if None in values:
            missing = "no <bndbox>" if box is None else "no numeric " + ", ".join(
                f"<{c}>" for c, v in zip(_CORNERS, values) if v is None)
            if report is None:
                raise ValueError(f"VOC annotation {str(path)!r}: object {k} '{name}' has {missing}")
            report.add("malformed object (box dropped)", str(path), f"object {k} '{name}': {missing}")
            continue
        names.append(name)
        corners.append(values)
        difficult.append(int(float(obj.findtext("difficult") or 0)) == 1)
        numbers.append(k)
    boxes = np.array(corners, dtype=np.float64).reshape(-1, 4) - np.array([1.0, 1.0, 0.0, 0.0])
    return VOCAnnotation(stated, names, boxes, np.array(difficult, dtype=bool), numbers)


class VOCDetection(DetectionDataset):
    """A VOC split: ``root`` is ``VOCdevkit/VOC2012`` (or ``VOC2007``) holding ``Annotations/*.xml``,
    ``JPEGImages/*.jpg`` and ``ImageSets/Main/{split}.txt``.

    Labels are 1..20 in :data:`VOC_CLASSES` order; ``image_id`` is the sample index. ``difficult`` objects are
    kept in the index flagged ``ignore``: left out of training targets, and ``iscrowd=1`` in :meth:`to_coco` so
    COCOeval ignores detections on them (the common convention for VOC with COCO metrics). ``names`` reads these
    images instead of the split list (``split`` then only names the set in messages).
    """

    class_names = list(VOC_CLASSES)
    label_to_cat_id = {label: label for label in range(1, len(VOC_CLASSES) + 1)}

    def __init__(self, root: str | Path, *, split: str = "train", transform: Transform | None = None,
                 strict: bool = False, names: list[str] | None = None) -> None:
        self.root = root = Path(root)
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if names is None:
            if not list_file.is_file():
                raise FileNotFoundError(f"VOC split list {str(list_file)!r} not found; root must be a "
                                        "VOCdevkit/VOC20xx folder holding Annotations/, JPEGImages/ and "
                                        "ImageSets/Main/{split}.txt")
            names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        report = DatasetReport(f"VOC {root.name} {split}")
        lookup = {name: label for label, name in enumerate(VOC_CLASSES, start=1)}
        files, listed, box_image, boxes, labels, difficult, box_names = [], [], [], [], [], [], []
        for name in names:  # one XML per image: parsing is per file by nature
            xml = root / "Annotations" / f"{name}.xml"
            try:
                stated, objects, corners, hard, numbers = parse_voc_xml(xml, report)
            except FileNotFoundError:
                report.add("missing annotation (image skipped)", str(xml))
                continue
            except (ET.ParseError, ValueError) as error:
                report.add("unreadable annotation (image skipped)", str(xml), f"{type(error).__name__}: {error}")
                continue
            box_image += [len(files)] * len(objects)
            files.append(str(root / "JPEGImages" / f"{name}.jpg"))
            listed.append(stated)
            boxes.append(corners)
            labels += [lookup.get(o, 0) for o in objects]
            difficult.append(hard)
            box_names += [f"object {k} '{o}'" for k, o in zip(numbers, objects)]
        index = build_index(report, files=files, image_ids=np.zeros(len(files)), listed_sizes=np.array(listed),
                            box_image=np.array(box_image, dtype=np.int64),
                            boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4)),
                            labels=np.array(labels, dtype=np.int64), ignore=np.concatenate(difficult or [[]]),
                            box_names=np.array(box_names, dtype=str))
        report.finish(strict, fix=f"Fix or remove the files named above, or drop their names from {list_file}.")
        index = dataclasses.replace(index, image_ids=np.arange(len(index.files), dtype=np.int64))
        super().__init__(index, transform=transform)

    def to_coco(self) -> COCO:
        """The split as an in-memory pycocotools ``COCO`` ground truth (category ids = labels 1..20; difficult
        objects ``iscrowd=1``; boxes ``[x, y, w, h]`` in original pixels, area = w * h)."""
        index = self.index
        box_image = np.repeat(np.arange(len(index.files)), np.diff(index.offsets))  # (B,) image of each box
        # xyxy -> [x, y, w, h] in numpy: the index is numpy (box_convert would need tensors)
        xywh = np.concatenate([index.boxes[:, :2], index.boxes[:, 2:] - index.boxes[:, :2]], axis=1).astype(float)
        images = [{"id": int(i), "file_name": Path(f).name, "height": int(h), "width": int(w)}
                  for i, f, (h, w) in zip(index.image_ids, index.files, index.sizes)]
        annotations = [{"id": k + 1, "image_id": int(index.image_ids[i]), "category_id": int(c), "bbox": b,
                        "area": b[2] * b[3], "iscrowd": int(d)}
                       for k, (i, c, b, d) in enumerate(zip(box_image, index.labels, xywh.tolist(), index.ignore))]
        categories = [{"id": label, "name": name, "supercategory": "voc"}
                      for label, name in enumerate(VOC_CLASSES, start=1)]
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco.createIndex()
        return coco
