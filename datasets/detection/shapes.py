"""A generated detection dataset written in the real COCO 2017 layout, for demos and tests.

``write_shapes_coco`` draws scenes with :func:`mobilenetv2_dense.datasets.synthetic.render_scene` and writes
``annotations/instances_{train,val}2017.json`` + ``train2017/``, ``val2017/`` JPEGs;
:class:`mobilenetv2_dense.tasks.detection.datamodule.ShapesCOCODataModule` writes it on first use and then reads it
back through exactly the COCO path a user's dataset takes.
Category ids are deliberately not contiguous (1, 3, 7, 9) so the id <-> label mapping is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..synthetic import SHAPE_CLASSES, render_scene

SHAPE_CATEGORY_IDS = (1, 3, 7, 9)  # COCO-style ids with gaps, one per SHAPE_CLASSES entry
STARTED = ".shapes_coco_writing"  # written first: a tree without it (or MARKER) is someone else's data
MARKER = ".shapes_coco_complete.json"  # written last: its absence means a missing or half-written dataset


def shape_categories() -> list[dict]:
    return [{"id": cat, "name": name, "supercategory": "shape"} for cat, name in zip(SHAPE_CATEGORY_IDS, SHAPE_CLASSES)]


def write_shapes_coco(root: str | Path, *, num_train: int = 1500, num_val: int = 200, image_size: int = 320,
                      seed: int = 0, max_objects: int = 5, object_size: tuple[float, float] = (0.1, 0.5),
                      elongation: tuple[float, float] | None = None) -> Path:
    """Write ``num_train`` / ``num_val`` scenes of ``image_size`` squared pixels under ``root`` in the COCO 2017
    layout; about one image in ``max_objects + 1`` has no objects (negatives). Returns ``root``.

    ``object_size``: the range of a shape's size as a fraction of the image side. ``elongation = (lo, hi)``: shapes
    squeezed to boxes of 1:lo..1:hi, along x or y (``render_scene``); the default ``None`` writes the near-square
    shapes of the detection demo, byte for byte as before these options existed.

    Annotations carry ``bbox`` ``[x, y, w, h]`` of the visible pixels, ``area`` (visible pixels), ``iscrowd`` 0 and
    ``segmentation`` as compressed RLE from ``pycocotools.mask.encode``. The marker file is written last.
    """
    root = Path(root)
    ours = (root / STARTED).is_file() or (root / MARKER).is_file()
    if not ours and any((root / name).exists() for name in ("annotations", "train2017", "val2017")):
        raise FileExistsError(f"{str(root)!r} holds a COCO-layout tree not written by write_shapes_coco (no "
                              f"{STARTED} or {MARKER}); pick another root rather than overwrite it")
    root.mkdir(parents=True, exist_ok=True)
    (root / STARTED).touch()
    (root / MARKER).unlink(missing_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    next_ann_id = 1
    for split_number, (split, count) in enumerate((("train2017", num_train), ("val2017", num_val))):
        rng = np.random.default_rng([seed, split_number])  # val does not change with num_train
        (root / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            pixels, objects = render_scene(rng, image_size, image_size, max_objects=max_objects,
                                           min_size=object_size[0], max_size=object_size[1], elongation=elongation)
            file_name = f"{image_id:012d}.jpg"
            Image.fromarray(pixels).save(root / split / file_name, quality=90)
            images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size,
                           "license": 1})
            if not objects:
                continue
            # (H, W, n) Fortran-ordered uint8 is the layout pycocotools encodes in one call
            masks = np.asfortranarray(np.stack([o.mask for o in objects], axis=2).astype(np.uint8))
            rles = mask_utils.encode(masks)
            areas, boxes = mask_utils.area(rles), mask_utils.toBbox(rles)  # (n,), (n, 4) xywh of visible pixels
            for obj, rle, area, box in zip(objects, rles, areas.tolist(), boxes.tolist()):
                annotations.append({"id": next_ann_id, "image_id": image_id,
                                    "category_id": SHAPE_CATEGORY_IDS[obj.label - 1], "bbox": box, "area": area,
                                    "iscrowd": 0, "segmentation": {"size": rle["size"],
                                                                   "counts": rle["counts"].decode("ascii")}})
                next_ann_id += 1
        info = {"description": "generated shapes (mobilenetv2_dense.datasets.detection.shapes)", "version": "1.0",
                "year": 2025, "contributor": "write_shapes_coco", "date_created": ""}
        dataset = {"info": info, "licenses": [{"id": 1, "name": "CC0", "url": ""}],
                   "images": images, "annotations": annotations, "categories": shape_categories()}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(dataset))
    params = {"num_train": num_train, "num_val": num_val, "image_size": image_size, "seed": seed,
              "max_objects": max_objects, "object_size": list(object_size),
              "elongation": None if elongation is None else list(elongation)}
    (root / MARKER).write_text(json.dumps(params))
    return root
