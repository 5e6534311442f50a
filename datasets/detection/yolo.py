"""YOLO-format detection data (the layout Ultralytics defines and annotation tools export), read as it is.

A ``data.yaml`` names the dataset folder, the images of each split and the classes::

    path: my_data              # the dataset folder, relative to data.yaml's folder (absent: that folder)
    train: images/train        # a folder (searched recursively), a .txt list of image paths, or a list of those
    val: images/val
    test: images/test          # optional
    names: {0: bolt, 1: nut}   # or a list [bolt, nut] (ids 0..K-1); the keys are the class ids of the labels

Each image ``.../images/.../x.jpg`` has its labels in ``.../labels/.../x.txt`` (the last ``images`` folder of the
path replaced by ``labels``; an image under no ``images`` folder has its ``.txt`` beside it), one object a line:
``class cx cy w h``, the box centre and size as fractions of the image width and height. A polygon line
``class x1 y1 x2 y2 ...`` (Ultralytics' segment labels) gives its bounding box. A missing or empty label file is an
image without objects. Boxes are in the displayed (EXIF-rotated) frame, as Ultralytics reads them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pycocotools.coco import COCO

from ..checks import DatasetError, DatasetReport
from .dataset import IMAGE_SUFFIXES, DetectionDataset, DetectionIndex, Transform, build_index, probe_images

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class YOLODataConfig:
    """A parsed ``data.yaml``. ``splits`` maps ``train`` / ``val`` / ``test`` to the values written (resolved by
    :meth:`sources`); label ``k`` (1..K) is YAML class id ``class_ids[k - 1]`` named ``class_names[k - 1]``, ids in
    increasing order."""

    file: Path
    root: Path
    splits: dict[str, tuple[str, ...]]
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]

    @property
    def label_to_cat_id(self) -> dict[int, int]:
        return {label: cat for label, cat in enumerate(self.class_ids, start=1)}

    def sources(self, split: str) -> list[Path]:
        """The folders and list files of ``split``, resolved against ``root`` (Ultralytics also tries a value
        starting with ``../`` without it, as Roboflow exports write them). Raises naming the key and the fix."""
        if split not in self.splits:
            raise DatasetError(f"{self.file}: no {split!r} key; add '{split}: images/{split}' (a folder of images, a "
                               "list file or a list of those, relative to 'path')")
        resolved = []
        for value in self.splits[split]:
            path = self.root / value
            if not path.exists() and value.startswith("../") and (self.root / value[3:]).exists():
                path = self.root / value[3:]
            if not path.exists():
                raise FileNotFoundError(f"{self.file}: {split}: {value!r} is {str(path)!r}, which does not exist; "
                                        f"'{split}' names image folders or list files relative to 'path' ({self.root})")
            resolved.append(path)
        return resolved


def read_data_yaml(path: str | Path) -> YOLODataConfig:
    """Parse a YOLO ``data.yaml`` (see the module docstring); errors name the file, the key and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"YOLO data.yaml {str(path)!r} not found; pass the dataset's data.yaml "
                                "(path, train, val, names)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DatasetError(f"{str(path)!r} is not readable YAML ({type(error).__name__}: {error})") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{str(path)!r} holds {type(data).__name__}, not a mapping; a YOLO data.yaml has the keys "
                           "path, train, val and names")
    written = Path(str(data.get("path") or "."))
    root = written if written.is_absolute() else path.parent / written
    if not root.is_dir() and written.is_dir():  # Ultralytics reads a relative path from the working folder
        root = written
    class_ids, class_names = _classes(path, data.get("names"), data.get("nc"))
    splits = {}
    for split in SPLITS:
        value = data.get(split)
        if value:
            values = value if isinstance(value, list) else [value]
            splits[split] = tuple(str(v) for v in values)
    return YOLODataConfig(file=path, root=root, splits=splits, class_ids=class_ids, class_names=class_names)


def _classes(path: Path, names: Any, nc: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``(class ids sorted, their names)`` from ``names`` (list or {id: name}) and ``nc`` (checked against it)."""
    if names is None and isinstance(nc, int) and nc > 0:
        names = [f"class{i}" for i in range(nc)]  # Ultralytics' names for an nc-only data.yaml
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DatasetError(f"{path}: 'names' must be a non-empty list or {{id: name}} mapping, got {names!r}")
    try:
        ids = {int(key): str(name) for key, name in names.items()}
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{path}: 'names' keys are the class ids of the label files and must be integers, got "
                           f"{sorted(map(str, names))}") from error
    if min(ids) < 0:
        raise DatasetError(f"{path}: class ids must be >= 0, 'names' has {min(ids)}")
    if nc is not None and nc != len(ids):
        raise DatasetError(f"{path}: nc is {nc} but 'names' lists {len(ids)} classes; make them agree (or drop nc)")
    order = sorted(ids)
    return tuple(order), tuple(ids[i] for i in order)


def list_images(sources: list[Path]) -> list[str]:
    """Image paths of a split: every image under each folder (recursively, sorted) and every line of each list
    file (a relative line, ``./images/x.jpg`` or ``images/x.jpg``, is relative to the list file's folder)."""
    files: list[str] = []
    for source in sources:
        if source.is_dir():
            found = (p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            files += sorted(str(p) for p in found)
        else:
            lines = (line.strip() for line in source.read_text(encoding="utf-8-sig").splitlines())
            files += [str(p if p.is_absolute() else source.parent / p) for p in map(Path, lines) if str(p) != "."]
    return files


def label_path(image: str | Path) -> Path:
    """The label file of ``image``: its last ``images`` folder replaced by ``labels``, the suffix by ``.txt``."""
    parts = list(Path(image).parts)
    folders = [i for i, part in enumerate(parts[:-1]) if part == "images"]
    if folders:
        parts[folders[-1]] = "labels"
    return Path(*parts).with_suffix(".txt")


@dataclass(frozen=True)
class YOLOLabels:
    """Every label line of a split: ``owner`` (B,) index of the line's image, ``line`` (B,) 1-based line number,
    ``values`` (B, 5) float64 ``class cx cy w h`` as written (a polygon line as its bounding box);
    ``missing`` (I,) bool no label file, ``unreadable`` (I,) bool a label file that cannot be read."""

    owner: np.ndarray
    line: np.ndarray
    values: np.ndarray
    missing: np.ndarray
    unreadable: np.ndarray


def read_labels(label_files: list[Path], report: DatasetReport) -> YOLOLabels:
    """Read the label files; malformed lines and unreadable files are recorded in ``report`` naming file and line.

    The text is split per line (by nature); every check on the numbers runs on the stacked arrays.
    """
    count = len(label_files)
    missing, unreadable = np.zeros(count, dtype=bool), np.zeros(count, dtype=bool)
    rows: list[list[str]] = []
    owner: list[int] = []
    line: list[int] = []
    for i, path in enumerate(label_files):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            missing[i] = True
            continue
        except (OSError, UnicodeDecodeError) as error:
            unreadable[i] = True
            report.add("unreadable label file (image skipped)", str(path), f"{type(error).__name__}: {error}")
            continue
        for n, tokens in enumerate((row.split() for row in text.splitlines()), start=1):
            if len(tokens) == 5:
                rows.append(tokens)
            elif len(tokens) >= 7 and len(tokens) % 2 == 1:
                rows.append(_polygon_box(tokens))
            elif not tokens:
                continue
            else:
                report.add("malformed line (dropped)", f"{path}:{n}", f"{len(tokens)} values; expected 'class cx cy "
                                                                      "w h' or a polygon 'class x1 y1 x2 y2 ...'")
                continue
            owner.append(i)
            line.append(n)
    owner_array, line_array = np.array(owner, dtype=np.int64), np.array(line, dtype=np.int64)
    try:
        values = np.array(rows, dtype=np.float64).reshape(-1, 5)
    except ValueError:  # a word among the numbers: find the lines, one by one only on this path
        numeric = np.array([_is_numeric(row) for row in rows], dtype=bool)
        for r in np.flatnonzero(~numeric):
            report.add("malformed line (dropped)", f"{label_files[owner[r]]}:{line[r]}",
                       f"not a number in {' '.join(rows[r])!r}")
        values = np.array([row for row, ok in zip(rows, numeric) if ok], dtype=np.float64).reshape(-1, 5)
        owner_array, line_array = owner_array[numeric], line_array[numeric]
    return YOLOLabels(owner_array, line_array, values, missing, unreadable)


def _is_numeric(row: list[str]) -> bool:
    try:
        [float(token) for token in row]
    except ValueError:
        return False
    return True


def _polygon_box(tokens: list[str]) -> list[str]:
    """``class x1 y1 ... xn yn`` -> ``class cx cy w h`` of the polygon's bounding box (as strings, like a box line;
    a non-numeric polygon is passed on as it is and reported with the others)."""
    try:
        xy = np.array(tokens[1:], dtype=np.float64).reshape(-1, 2)  # (n, 2) normalised x, y
    except ValueError:
        return tokens[:5]
    low, high = xy.min(axis=0), xy.max(axis=0)
    return [tokens[0], *map(repr, ((low + high) / 2).tolist()), *map(repr, (high - low).tolist())]


class YOLODetection(DetectionDataset):
    """One split of a YOLO-format dataset (see the module docstring), checked at set-up.

    ``data``: a ``data.yaml`` path or its :class:`YOLODataConfig`; ``split``: ``train``, ``val`` or ``test``.
    Labels are 1..K in increasing YAML class id; ``label_to_cat_id`` maps them back to the YAML's ids and
    ``class_names[label - 1]`` names them; ``image_id`` is the index of the image among the kept ones, in path
    order. The check adds to :func:`~mobilenetv2_dense.datasets.detection.dataset.build_index`'s (images,
    zero-area boxes, boxes past the edge): malformed lines, class ids not in ``names``, coordinates outside
    [0, 1] and duplicate lines, each named by label file and line, and unreadable label files; ``strict=True``
    raises :class:`~mobilenetv2_dense.datasets.checks.DatasetError` instead of dropping them.
    """

    def __init__(self, data: str | Path | YOLODataConfig, split: str = "train", *,
                 transform: Transform | None = None, strict: bool = False) -> None:
        self.config = config = data if isinstance(data, YOLODataConfig) else read_data_yaml(data)
        self.split = split
        self.class_names = list(config.class_names)
        self.label_to_cat_id = config.label_to_cat_id
        self.cat_id_to_label = {cat: label for label, cat in self.label_to_cat_id.items()}
        files = list_images(config.sources(split))
        if not files:
            raise DatasetError(f"{config.file}: {split}: no {'/'.join(IMAGE_SUFFIXES)} images in "
                               f"{', '.join(map(str, config.sources(split)))}")
        report = DatasetReport(f"YOLO {config.file.name} {split}")
        label_files = [label_path(f) for f in files]
        labels = read_labels(label_files, report)
        if labels.missing.all():
            raise DatasetError(f"{config.file}: {split}: none of the {len(files)} images has a label file; the labels "
                               f"of {files[0]} belong in {label_files[0]} (the images folder's twin 'labels')")
        index = self._index(report, files, label_files, labels)
        report.counts["images"] = len(files)  # those with an unreadable label file included
        report.counts.pop("ignored boxes (crowd/difficult)", None)  # YOLO has neither
        report.counts["without a label file"] = int(labels.missing.sum())
        report.finish(strict, fix=f"Fix or remove the label lines and files named above (the images of {split} in "
                                  f"{config.file}), or pass strict=False to drop bad lines and skip broken images.")
        super().__init__(index, transform=transform)

    def _index(self, report: DatasetReport, files: list[str], label_files: list[Path],
               labels: YOLOLabels) -> DetectionIndex:
        """Check the label lines (all at once), turn them into pixel boxes and build the checked index."""
        where = lambda r: f"{label_files[labels.owner[r]]}:{labels.line[r]}"
        values, keep = labels.values, ~labels.unreadable[labels.owner]
        ids = np.asarray(self.config.class_ids, dtype=np.float64)
        known = np.isin(values[:, 0], ids)  # a fractional or NaN id is in no list
        for r in np.flatnonzero(keep & ~known):
            report.add("class id not in names (line dropped)", where(r),
                       f"class {values[r, 0]:g}; {self.config.file.name} names {_id_range(self.config.class_ids)}")
        keep &= known
        inside = ((values[:, 1:] >= 0) & (values[:, 1:] <= 1)).all(axis=1)  # NaN compares False: outside
        for r in np.flatnonzero(keep & ~inside):
            report.add("coordinates outside [0, 1] (line dropped)", where(r),
                       f"cx cy w h {' '.join(f'{v:g}' for v in values[r, 1:])}; YOLO coordinates are fractions "
                       "of the image width and height")
        keep &= inside
        # Duplicates: the same (image, class, box) written twice; the first stays.
        rows = np.flatnonzero(keep)
        _, first, inverse = np.unique(np.column_stack([labels.owner[rows], values[rows]]), axis=0,
                                      return_index=True, return_inverse=True)
        original = rows[first[inverse.reshape(-1)]]  # (B',) the first line holding each kept line's values
        for r, same in zip(rows[original != rows], original[original != rows]):
            report.add("duplicate line (dropped)", where(r), f"same as line {labels.line[same]}")
        keep[rows[original != rows]] = False

        usable = ~labels.unreadable
        kept_files = [f for f, ok in zip(files, usable) if ok]
        new_image = np.cumsum(usable) - 1  # (I,) index of each image among the usable ones
        rows = np.flatnonzero(keep)
        probes = probe_images(kept_files)
        sizes = np.array([size for _, size in probes], dtype=np.float64).reshape(-1, 2)  # (I', 2) H, W; 0 if broken
        box_image = new_image[labels.owner[rows]]
        height, width = sizes[box_image, 0], sizes[box_image, 1]  # (B,) of each box's image
        cx, cy, w, h = values[rows, 1:].T
        # normalised centre + size -> pixel corners (Ultralytics' xywhn2xyxy)
        xyxy = np.column_stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                                (cy + h / 2) * height])
        index = build_index(report, files=kept_files, image_ids=np.zeros(len(kept_files)),
                            listed_sizes=sizes.astype(np.int64), box_image=box_image, boxes=xyxy,
                            labels=np.searchsorted(ids, values[rows, 0]) + 1, ignore=np.zeros(len(rows), bool),
                            box_names=np.array([f"{label_files[labels.owner[r]]} line {labels.line[r]}"
                                                for r in rows], dtype=str), probes=probes)
        return dataclasses.replace(index, image_ids=np.arange(len(index.files), dtype=np.int64))

    def to_coco(self) -> COCO:
        """The split as an in-memory pycocotools ``COCO`` ground truth: category ids are the YAML's class ids,
        ``file_name`` is the image path relative to the dataset folder (absolute when outside it), boxes
        ``[x, y, w, h]`` in original pixels, ``area`` = w * h, ``iscrowd`` 0."""
        coco = COCO()
        coco.dataset = coco_ground_truth(self.index, self.label_to_cat_id, self.class_names, self.config.root)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco.createIndex()
        return coco


def coco_ground_truth(index: DetectionIndex, label_to_cat_id: dict[int, int], class_names: list[str],
                      root: Path | None = None) -> dict:
    """A checked index as a COCO instances dict (``images``, ``annotations``, ``categories``); ``file_name`` is
    relative to ``root`` where the image is under it. Ignored boxes (crowd / difficult) get ``iscrowd`` 1."""
    box_image = np.repeat(np.arange(len(index.files)), np.diff(index.offsets))  # (B,) image of each box
    # xyxy -> [x, y, w, h] in numpy: the index is numpy (box_convert would need tensors)
    xywh = np.concatenate([index.boxes[:, :2], index.boxes[:, 2:] - index.boxes[:, :2]], axis=1).astype(float)
    categories = np.array([label_to_cat_id[label] for label in range(1, len(class_names) + 1)])
    images = [{"id": int(i), "file_name": _relative(f, root), "height": int(h), "width": int(w)}
              for i, f, (h, w) in zip(index.image_ids, index.files, index.sizes)]
    annotations = [{"id": k + 1, "image_id": int(index.image_ids[i]), "category_id": int(c), "bbox": b,
                    "area": b[2] * b[3], "iscrowd": int(d)}
                   for k, (i, c, b, d) in enumerate(zip(box_image, categories[index.labels - 1], xywh.tolist(),
                                                        index.ignore))]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": int(c), "name": name} for c, name in zip(categories, class_names)]}


def _relative(file: str, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError):
            return Path(file).relative_to(root).as_posix()
    return str(file)


def _id_range(ids: tuple[int, ...]) -> str:
    """``0..3`` for contiguous ids, else the list."""
    return f"{ids[0]}..{ids[-1]}" if list(ids) == list(range(ids[0], ids[-1] + 1)) else str(list(ids))
