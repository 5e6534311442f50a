"""SSDLite on a YOLO-format set through the entry point a user runs: fit, validate and predict with
``configs/ssdlite_mobilenetv2_yolo.yaml`` and ``--data.init_args.data_yaml``; predictions carry the YAML's ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.synthetic import SHAPE_CLASSES, render_scene

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "ssdlite_mobilenetv2_yolo.yaml")
CLASS_IDS = (10, 20, 30, 40)  # the YAML's ids of SHAPE_CLASSES: not labels 1..4, not 0..3
SMALL = ["--data.init_args.image_size", "64", "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0",
         "--data.init_args.pin_memory", "false", "--model.init_args.backbone.width_mult", "0.35",
         "--model.init_args.post_processing.topk_candidates", "30",
         "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]

pytestmark = pytest.mark.usefixtures("one_thread")


def write_shapes_yolo(root: Path, *, num_train: int = 8, num_val: int = 4, size: int = 96, seed: int = 0) -> Path:
    """Generated scenes as a YOLO set: ``images/{train,val}/*.jpg``, ``labels/{train,val}/*.txt``, ``data.yaml``."""
    for k, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        rng = np.random.default_rng([seed, k])
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            pixels, objects = render_scene(rng, size, size, max_objects=3, min_size=0.2)
            Image.fromarray(pixels).save(root / "images" / split / f"{i:04d}.jpg", quality=90)
            lines = [f"{CLASS_IDS[o.label - 1]} {(o.box[0] + o.box[2]) / 2 / size} {(o.box[1] + o.box[3]) / 2 / size} "
                     f"{(o.box[2] - o.box[0]) / size} {(o.box[3] - o.box[1]) / size}\n" for o in objects]
            (root / "labels" / split / f"{i:04d}.txt").write_text("".join(lines))
    names = "".join(f"  {cat}: {name}\n" for cat, name in zip(CLASS_IDS, SHAPE_CLASSES))
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return root / "data.yaml"


def test_fit_validate_predict_on_a_yolo_data_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_yaml = write_shapes_yolo(tmp_path / "my_data")
    monkeypatch.chdir(tmp_path)  # the config's runs/ folder lands here
    data = ["--data.init_args.data_yaml", str(data_yaml)]
    fit = cli_main(["fit", "--config", CONFIG, *data, *SMALL, "--trainer.max_steps", "2"])
    assert fit.model.num_classes == 4 and fit.model.labels.label_to_cat_id == {1: 10, 2: 20, 3: 30, 4: 40}
    assert fit.model.hparams.anchors["scales"] is not None  # fitted to the YOLO boxes (the config's fit_anchors: true)
    checkpoint = next((tmp_path / "runs").rglob("last.ckpt"))

    validate = cli_main(["validate", "--config", CONFIG, *data, *SMALL, "--ckpt_path", str(checkpoint)])
    assert {"val/map", "val/map_50", "val/mar_100"} <= set(validate.trainer.callback_metrics)

    val_images = data_yaml.parent / "images" / "val"
    cli_main(["predict", "--config", CONFIG, *data, *SMALL, "--ckpt_path", str(checkpoint),
              "--data.init_args.predict_images", str(val_images)])
    results = json.loads((tmp_path / "runs" / "ssdlite_mobilenetv2_yolo" / "predictions" / "predictions.json")
                         .read_text())
    assert results and {r["category_id"] for r in results} <= set(CLASS_IDS)  # the YAML's ids, not labels 1..4
    # val images keep the ids of the in-memory ground truth, so the file scores against it as it is
    truth = {image["file_name"]: image["id"] for image in validate.datamodule.val_coco.dataset["images"]}
    assert {(f"images/val/{r['file_name']}", r["image_id"]) for r in results} <= set(truth.items())


def test_a_missing_data_yaml_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)data.yaml 'absent/data.yaml' not found.*model.init_args.num_classes"):
        cli_main(["fit", "--config", CONFIG, "--data.init_args.data_yaml", "absent/data.yaml", *SMALL])
