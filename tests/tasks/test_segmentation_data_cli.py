"""Segmentation data beyond VOC through the entry point a user runs: the shipped folder, Cityscapes and ADE20K configs
on tiny sets written in the real layouts, ``fit`` / ``validate`` / ``predict`` with ``cli_main`` and a real Trainer.

The classes the data define reach the model (``num_classes`` linked by the CLI), the per-class IoU table, the
evaluation pictures, the predicted masks and the export sidecar.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.segmentation import ADE20K_CLASSES, CITYSCAPES_CLASSES
from tests.datasets.seg_layouts import (
    FOLDER_CLASSES,
    FOLDER_COLOURS,
    VOID_COLOUR,
    write_ade20k,
    write_cityscapes,
    write_folder_set,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = ["--model.init_args.backbone.width_mult", "0.35", "--model.init_args.backbone.weights", "null",
         "--data.init_args.crop_size", "32", "--data.init_args.batch_size", "2", "--data.init_args.val_batch_size", "2",
         "--data.init_args.num_workers", "0", "--data.init_args.pin_memory", "false",
         "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
         "--trainer.check_val_every_n_epoch", "1"]


def folder_options(root: Path) -> list[str]:
    """The folder example config on colour masks, classes, colours and void colour from a YAML file."""
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": FOLDER_CLASSES,
                                                       "colors": [list(c) for c in FOLDER_COLOURS],
                                                       "ignore_colors": [list(VOID_COLOUR)]}))
    return [f"--data.init_args.{split}_{kind}={root / kind / split}" for split in ("train", "val")
            for kind in ("images", "masks")] + [f"--data.init_args.classes={root / 'classes.yaml'}"]


# name -> (config, writer of the tiny set, its options, class names, glob of its val images)
CASES = {
    "folder": ("deeplabv3lite_folder_example.yaml", lambda root: write_folder_set(root, colour=True), folder_options,
               tuple(FOLDER_CLASSES), "images/val/*.jpg"),
    "cityscapes": ("deeplabv3lite_mobilenetv2_cityscapes.yaml", write_cityscapes,
                   lambda root: ["--data.init_args.root", str(root)], CITYSCAPES_CLASSES, "leftImg8bit/val/**/*.png"),
    "ade20k": ("deeplabv3lite_mobilenetv2_ade20k.yaml", write_ade20k, lambda root: ["--data.init_args.root", str(root)],
               ADE20K_CLASSES, "ADEChallengeData2016/images/validation/*.jpg"),
}


@pytest.fixture(scope="module", params=list(CASES))
def run(request, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One case fitted 2 steps (validating one batch) from its shipped config in a fresh folder."""
    config, write, options, names, val_glob = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    data = write(folder / "data")
    common = ["--config", str(CONFIGS / config), *options(data), *SMALL]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the config's relative runs/ folder lands here
        cli = cli_main(["fit", *common, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"])
    return {"name": request.param, "folder": folder, "common": common, "names": names, "cli": cli,
            "data": data, "val_glob": val_glob, "checkpoint": next(folder.rglob("last.ckpt"))}


def test_fit_takes_the_classes_from_the_data(run):
    task, data = run["cli"].model, run["cli"].datamodule
    assert task.num_classes == data.num_classes == len(run["names"])  # linked by the CLI, no num_classes typed
    assert task.class_names == list(run["names"])
    assert 0 <= float(run["cli"].trainer.callback_metrics["val/miou"]) <= 1
    assert task.hparams.num_classes == len(run["names"])  # in the checkpoint


def test_validate_reports_per_class_with_the_data_names(run, monkeypatch, caplog):
    monkeypatch.chdir(run["folder"])
    with caplog.at_level(logging.INFO):
        cli = cli_main(["validate", *run["common"], "--ckpt_path", str(run["checkpoint"])])
    assert {"val/miou", "val/pixel_accuracy", "val/loss"} <= set(cli.trainer.callback_metrics)
    table = caplog.text[caplog.text.index("val per-class IoU"):]
    rows = [line.split("  ")[0].strip() for line in table.splitlines()[3:3 + len(run["names"])]]
    assert rows == list(run["names"])
    pictures = Path(cli.trainer.log_dir) / "validate"
    assert (pictures / "iou_per_class.png").is_file() and (pictures / "confusion_matrix.png").is_file()


def test_predict_writes_a_mask_per_image_at_its_size(run, monkeypatch):
    monkeypatch.chdir(run["folder"])
    cli_main(["predict", *run["common"], "--ckpt_path", str(run["checkpoint"]),
              "--data.init_args.predict_images", str(run["data"] / run["val_glob"])])  # Cityscapes: a folder a city
    out = next(run["folder"].glob("runs/*/predictions"))  # the config's SegmentationPredictionWriter
    images = sorted(run["data"].glob(run["val_glob"]))
    assert images and len(list((out / "masks").glob("*.png"))) == len(images)
    for image in images:
        with Image.open(out / "masks" / f"{image.stem}.png") as mask, Image.open(image) as original:
            assert mask.size == original.size
            assert np.asarray(mask).max() < len(run["names"])
            if run["name"] == "folder":  # colour masks: the predictions are drawn in the data's own colours
                assert mask.getpalette()[: 3 * len(FOLDER_COLOURS)] == [v for c in FOLDER_COLOURS for v in c]


def test_export_sidecar_takes_the_data_class_names(run):
    """The export command's class list (what its sidecar writes, tests/deploy run the whole export) for this data."""
    from mobilenetv2_dense.commands.export import label_set

    classes = label_set(run["cli"].model, run["cli"].datamodule, {})
    assert [c["name"] for c in classes] == list(run["names"])
    assert [c["label"] for c in classes] == list(range(len(run["names"])))
