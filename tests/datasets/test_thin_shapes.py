"""The generator's elongated option (thin rods and bars for fitting anchors) and the default it leaves alone: the
detection demo's scenes, and data written before the option existed, stay as they were."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mobilenetv2_dense.datasets.detection.shapes import MARKER, write_shapes_coco
from mobilenetv2_dense.datasets.synthetic import render_scene
from mobilenetv2_dense.tasks.detection import ShapesCOCODataModule

# sha256 of 12 default scenes (64 px, seed 7) as the generator drew them before ``elongation`` existed.
DEFAULT_SCENES_SHA256 = "f304737bfa21161cc19f891522a944608948b00605a1c16ae012ef848c5bd84c"


def test_default_scenes_are_unchanged() -> None:
    digest, rng = hashlib.sha256(), np.random.default_rng(7)
    for _ in range(12):
        pixels, objects = render_scene(rng, 64, 64, max_objects=5, min_size=0.1, max_size=0.5)
        digest.update(pixels.tobytes())
        for obj in objects:
            digest.update(np.array(obj.box).tobytes() + obj.mask.tobytes())
    assert digest.hexdigest() == DEFAULT_SCENES_SHA256


def test_elongated_shapes_have_thin_boxes_along_both_axes(tmp_path: Path) -> None:
    root = write_shapes_coco(tmp_path / "thin", num_train=20, num_val=2, image_size=160, object_size=(0.4, 0.9),
                             elongation=(5.0, 10.0))
    boxes = np.array([a["bbox"] for a in json.loads((root / "annotations/instances_train2017.json").read_text())
                      ["annotations"]])
    w, h = boxes[:, 2], boxes[:, 3]
    elongation = np.maximum(w, h) / np.minimum(w, h)
    assert len(boxes) >= 20 and np.median(elongation) > 4.5 and (elongation > 3).mean() > 0.9
    assert 0.2 < (h > w).mean() < 0.8  # rods along x and along y
    assert json.loads((root / MARKER).read_text())["elongation"] == [5.0, 10.0]


def test_data_written_before_the_options_is_not_rewritten(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    write_shapes_coco(root, num_train=2, num_val=1, image_size=32)
    old = {k: v for k, v in json.loads((root / MARKER).read_text()).items() if k not in ("object_size", "elongation")}
    (root / MARKER).write_text(json.dumps(old))  # a marker of the earlier writer
    written = (root / "annotations" / "instances_train2017.json").stat().st_mtime_ns
    ShapesCOCODataModule(str(root), num_train=2, num_val=1, scene_size=32, num_workers=0).prepare_data()
    assert (root / "annotations" / "instances_train2017.json").stat().st_mtime_ns == written
    ShapesCOCODataModule(str(root), num_train=2, num_val=1, scene_size=32, elongation=(5.0, 10.0),
                         num_workers=0).prepare_data()  # other settings: written again
    assert json.loads((root / MARKER).read_text())["elongation"] == [5.0, 10.0]
