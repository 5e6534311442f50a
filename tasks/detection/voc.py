"""PASCAL VOC detection (``VOCdevkit/VOC2007`` or ``VOC2012``) and its COCO-format ground truth for COCOeval."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from tasks.checks import DatasetReport
from tasks.detection.data import DetectionDataset, Transform, build_index

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def parse_voc_xml(path: str | Path) -> tuple[tuple[int, int], list[str], np.ndarray, np.ndarray]:
    """One VOC annotation file -> ``((H, W) as stated or (0, 0), names, boxes (M, 4), difficult (M,) bool)``.

    VOC corners are 1-based inclusive pixel indices; the boxes returned are 0-based xyxy pixel edges
    ``(x1 - 1, y1 - 1, x2, y2)``, so a box covering pixel columns 1..10 is 10 pixels wide.
    """
    root = ET.parse(path).getroot()
    size = root.find("size")
    stated = (0, 0)
    if size is not None:
        stated = (int(float(size.findtext("height", "0"))), int(float(size.findtext("width", "0"))))
    names, corners, difficult = [], [], []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        names.append((obj.findtext("name") or "").strip())
        corners.append([float(box.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")] if box is not None
                       else [np.nan] * 4)
        difficult.append(int(float(obj.findtext("difficult") or 0)) == 1)
    boxes = np.array(corners, dtype=np.float64).reshape(-1, 4) - np.array([1.0, 1.0, 0.0, 0.0])
    return stated, names, boxes, np.array(difficult, dtype=bool)


class VOCDetection(DetectionDataset):
    """A VOC split: ``root`` is ``VOCdevkit/VOC2012`` (or ``VOC2007``) holding ``Annotations/*.xml``,
    ``JPEGImages/*.jpg`` and ``ImageSets/Main/{split}.txt``.

    Labels are 1..20 in :data:`VOC_CLASSES` order; ``image_id`` is the sample index. ``difficult`` objects are
    kept in the index flagged ``ignore``: left out of training targets, and ``iscrowd=1`` in :meth:`to_coco` so
    COCOeval ignores detections on them (the common convention for VOC with COCO metrics).
    """

    class_names = list(VOC_CLASSES)
    label_to_cat_id = {label: label for label in range(1, len(VOC_CLASSES) + 1)}

    def __init__(self, root: str | Path, *, split: str = "train", transform: Transform | None = None,
                 strict: bool = False) -> None:
        self.root = root = Path(root)
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"VOC split list {str(list_file)!r} not found; root must be a VOCdevkit/VOC20xx "
                                    "folder holding Annotations/, JPEGImages/ and ImageSets/Main/{split}.txt")
        names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        report = DatasetReport(f"VOC {root.name} {split}")
        lookup = {name: label for label, name in enumerate(VOC_CLASSES, start=1)}
        files, listed, box_image, boxes, labels, difficult, box_names = [], [], [], [], [], [], []
        for name in names:  # one XML per image: parsing is per file by nature
            xml = root / "Annotations" / f"{name}.xml"
            try:
                stated, objects, corners, hard = parse_voc_xml(xml)
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
            box_names += [f"object {k} '{o}'" for k, o in enumerate(objects)]
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
