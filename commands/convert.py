"""The ``convert`` command: a detection config's data, whatever its format, written as YOLO, COCO or VOC files.

    python -m mobilenetv2_dense convert --config configs/ssdlite_mobilenetv2_yolo.yaml \\
        --data.init_args.data_yaml my_data/data.yaml --to coco --output my_data_coco

The config's data module reads the train and val splits (COCO json, VOC xml, YOLO txt or the generated shapes), its
set-up check included: what the check drops is not written. Images are copied; boxes are in the displayed
(EXIF-rotated) frame, as every reader here takes them.

| ``--to`` | writes under ``--output`` | read back by |
|---|---|---|
| ``yolo`` | ``data.yaml``, ``images/{train,val}/``, ``labels/{train,val}/*.txt`` | ``YOLODataModule`` (``data_yaml``) |
| ``coco`` | ``annotations/instances_{train,val}2017.json``, ``{train,val}2017/`` | ``COCODataModule`` (``root``) |
| ``voc`` | ``VOC/{Annotations,JPEGImages}/``, ``VOC/ImageSets/Main/{train,val}.txt`` | ``VOCDetectionDataModule`` |

YOLO class ids are 0..K-1 in label order (Ultralytics requires contiguous ids) and crowd / difficult boxes are left
out (YOLO has no such flag); COCO keeps the data's category ids and writes crowd / difficult boxes with
``iscrowd`` 1; VOC writes class names and ``<difficult>``, and JPEG images (others are re-encoded at quality 95).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from torch.utils.data import ConcatDataset

from ..datasets.detection.dataset import DetectionIndex
from ..datasets.detection.yolo import coco_ground_truth
from ..datasets.images import read_rgb
from ..datasets.voc import VOC_CLASSES
from .cli import cli_main

FORMATS = ("yolo", "coco", "voc")


def read_split(datamodule: object, split: str) -> DetectionIndex:
    """The checked index of ``split`` (several sets, as VOC's 07+12, joined), image ids renumbered 1..I."""
    dataset = datamodule.make_dataset(split, None)
    parts = [part.index for part in (dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset])]
    counts = np.concatenate([np.diff(part.offsets) for part in parts])
    joined = {field.name: np.concatenate([getattr(part, field.name) for part in parts])
              for field in dataclasses.fields(DetectionIndex) if field.name != "offsets"}
    joined["image_ids"] = np.arange(1, len(counts) + 1, dtype=np.int64)
    return DetectionIndex(offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), **joined)


def output_names(files: np.ndarray) -> list[str]:
    """File names for one output folder: each file's own name, prefixed with its position where two share one."""
    names = [Path(f).name for f in files]
    repeated = Counter(names)
    return [f"{i:06d}_{name}" if repeated[name] > 1 else name for i, name in enumerate(names)]


def _boxes_of(index: DetectionIndex, i: int) -> slice:
    return slice(index.offsets[i], index.offsets[i + 1])


def write_yolo(index: DetectionIndex, split: str, output: Path) -> None:
    """``images/<split>/`` and ``labels/<split>/*.txt``: ``class cx cy w h`` per box, class = label - 1."""
    images, labels = output / "images" / split, output / "labels" / split
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    box_image = np.repeat(np.arange(len(index.files)), np.diff(index.offsets))  # (B,) image of each box
    size = index.sizes[box_image][:, [1, 0, 1, 0]].astype(np.float64)  # (B, 4) W, H, W, H of each box's image
    x0, y0, x1, y1 = (index.boxes / size).T  # normalised corners -> centre + size (Ultralytics' xyxy2xywhn)
    values = np.column_stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
    lines = [f"{label - 1} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for label, (cx, cy, w, h) in
             zip(index.labels.tolist(), values.tolist())]
    for i, (file, name) in enumerate(zip(index.files, output_names(index.files))):
        shutil.copy2(file, images / name)
        rows = _boxes_of(index, i)
        text = "".join(line for line, ignored in zip(lines[rows], index.ignore[rows]) if not ignored)
        (labels / name).with_suffix(".txt").write_text(text)


def write_coco(index: DetectionIndex, split: str, output: Path, label_to_cat_id: dict[int, int],
               class_names: list[str]) -> None:
    """``<split>2017/`` images and ``annotations/instances_<split>2017.json`` (the COCO 2017 layout)."""
    images = output / f"{split}2017"
    images.mkdir(parents=True)
    names = output_names(index.files)
    for file, name in zip(index.files, names):
        shutil.copy2(file, images / name)
    written = dataclasses.replace(index, files=np.array([str(images / name) for name in names]))
    (output / "annotations").mkdir(exist_ok=True)
    dataset = coco_ground_truth(written, label_to_cat_id, class_names, images)
    (output / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(dataset))


def write_voc(index: DetectionIndex, split: str, output: Path, class_names: list[str]) -> None:
    """``VOC/JPEGImages/*.jpg``, ``VOC/Annotations/*.xml`` (1-based corners, VOC's convention) and the split list."""
    voc = output / "VOC"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    stems = [Path(name).stem for name in output_names(index.files)]
    if len(set(stems)) < len(stems):  # a.png and a.jpg in one folder: positions keep them apart
        stems = [f"{i:06d}_{stem}" for i, stem in enumerate(stems)]
    for i, (file, stem) in enumerate(zip(index.files, stems)):
        if Path(file).suffix.lower() in (".jpg", ".jpeg"):
            shutil.copy2(file, voc / "JPEGImages" / f"{stem}.jpg")
        else:  # displayed pixels (EXIF applied), so the boxes stay where they are
            Image.fromarray(read_rgb(file)).save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
        height, width = index.sizes[i].tolist()
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "VOC"
        ET.SubElement(root, "filename").text = f"{stem}.jpg"
        size = ET.SubElement(root, "size")
        for key, value in (("width", width), ("height", height), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        rows = _boxes_of(index, i)
        for (x0, y0, x1, y1), label, ignored in zip(index.boxes[rows].tolist(), index.labels[rows].tolist(),
                                                    index.ignore[rows].tolist()):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = class_names[label - 1]
            for key, value in (("pose", "Unspecified"), ("truncated", 0), ("difficult", int(ignored))):
                ET.SubElement(obj, key).text = str(value)
            box = ET.SubElement(obj, "bndbox")
            # 0-based pixel edges -> VOC's 1-based inclusive corners (parse_voc_xml reads them back)
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):
                ET.SubElement(box, key).text = f"{value:.2f}".rstrip("0").rstrip(".")
        ET.ElementTree(root).write(voc / "Annotations" / f"{stem}.xml")
    (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{stem}\n" for stem in stems))


def main(argv: list[str] | None = None) -> Path:
    """The ``convert`` command: returns the output folder."""
    parser = argparse.ArgumentParser(
        prog="python -m mobilenetv2_dense convert",
        description="Write a detection config's train and val data (COCO, VOC, YOLO or generated) as YOLO, COCO "
                    "or VOC files. Other --data.* / --model.* options go to the config as on the training command "
                    "line.")
    parser.add_argument("--config", action="append", required=True, help="a detection config (repeatable)")
    parser.add_argument("--to", choices=FORMATS, required=True, help="the format to write")
    parser.add_argument("--output", required=True, help="folder to write (new or empty)")
    args, overrides = parser.parse_known_args(argv)
    output = Path(args.output)
    if output.exists() and any(output.iterdir()):
        raise FileExistsError(f"convert: --output {str(output)!r} is not empty; pass a new folder")

    configs = [option for config in args.config for option in ("--config", config)]
    with warnings.catch_warnings():  # LightningCLI warns that sys.argv differs from args: here it must
        warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
        cli = cli_main([*configs, *overrides, "--model.init_args.backbone.weights", "null"], run=False)
    datamodule = cli.datamodule
    if not hasattr(datamodule, "make_dataset") or not hasattr(datamodule, "label_to_cat_id"):
        raise TypeError(f"convert: {', '.join(args.config)} reads data with {type(datamodule).__name__}, which has "
                        "no detection splits; pass a detection config (COCO, VOC, YOLO or the shapes demo)")
    datamodule.prepare_data()  # writes generated data on first use; checks that real data is there
    class_names, label_to_cat_id = list(datamodule.class_names), dict(datamodule.label_to_cat_id)
    if args.to == "voc" and not set(class_names) <= set(VOC_CLASSES):
        print("convert: the classes are not VOC's 20; VOCDetectionDataModule reads VOC's only (annotation tools "
              "read any names)")
    output.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        index = read_split(datamodule, split)
        if args.to == "yolo":
            write_yolo(index, split, output)
        elif args.to == "coco":
            write_coco(index, split, output, label_to_cat_id, class_names)
        else:
            write_voc(index, split, output, class_names)
        print(f"convert: {split}: {len(index.files)} images, {len(index.boxes)} boxes -> {output}")
    if args.to == "yolo":
        names = dict(enumerate(class_names))
        (output / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                          "names": names}, sort_keys=False))
    read_with = {"yolo": f"--data.init_args.data_yaml {output / 'data.yaml'}",
                 "coco": f"--data.init_args.root {output}",
                 "voc": f"--data.init_args.root {output} --data.init_args.train_sets '[VOC/train]' "
                        "--data.init_args.val_set VOC/val"}[args.to]
    print(f"convert: read it with a {args.to.upper()} config and {read_with}")
    return output
