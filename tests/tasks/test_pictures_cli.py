"""Pictures through the CLI a user runs: ``fit`` leaves ``training_curves.png`` in the logger's folder (CSVLogger
and, switched in the config, TensorBoardLogger), ``plot RUN_DIR`` draws the same picture again from the folder,
and ``validate`` writes the evaluation pictures next to its metrics. Tiny runs: width 0.35, two steps, one
validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenetv2_dense.__main__ import main
from mobilenetv2_dense.pictures.charts import training_panels
from mobilenetv2_dense.pictures.curves import CURVES_FILE, find_log, read_metrics
from tests.deploy.runs import DET_CONFIG, QUIET, SEG_CONFIG, SEG_DATA, det_data

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [*QUIET, "--model.init_args.backbone.width_mult", "0.35", "--trainer.log_every_n_steps", "1"]
TENSORBOARD = ["--trainer.logger.class_path", "lightning.pytorch.loggers.TensorBoardLogger"]  # the config switch


def _run(folder: Path, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)  # the configs' relative runs/ land in the test's folder
    main(args)


def _valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def _check_curves(run_dir: Path, log_dir: Path, metric: str, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The picture fit wrote, the panels its log gives, and the ``plot`` command drawing it again, byte for byte."""
    written = log_dir / CURVES_FILE
    assert _valid_png(written)[0] > 1000
    panels = training_panels(read_metrics(find_log(run_dir)))
    assert "train/loss" in panels["loss"] and "val/loss" in panels["loss"]
    assert panels["learning rate"] and metric in panels["validation"]
    again = tmp_path / "again.png"
    _run(tmp_path, ["plot", str(run_dir), "--output", str(again)], monkeypatch)
    assert again.read_bytes() == written.read_bytes()


def test_segmentation_fit_curves_and_validate_pictures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    _run(tmp_path, ["fit", "--config", SEG_CONFIG, *SEG_DATA, *TINY, "--trainer.max_steps", "2"], monkeypatch)
    run_dir = tmp_path / "runs" / "deeplabv3lite_shapes_demo"
    log_dir = run_dir / "csv" / "version_0"
    assert (log_dir / "metrics.csv").is_file()
    _check_curves(run_dir, log_dir, "val/miou", tmp_path, monkeypatch)

    assert f"Training curves: {Path('runs/deeplabv3lite_shapes_demo/csv/version_0') / CURVES_FILE}" in caplog.text
    _run(tmp_path, ["validate", "--config", SEG_CONFIG, *SEG_DATA, *QUIET, "--ckpt_path",
                    str(log_dir / "checkpoints" / "last.ckpt")], monkeypatch)
    folder = run_dir / "csv" / "version_1" / "validate"
    for name in ("iou_per_class.png", "confusion_matrix.png"):
        _valid_png(folder / name)
    assert "version_1/validate/iou_per_class.png" in caplog.text  # the paths are printed
    # A validate run has no training log: plot still finds the fit's.
    assert find_log(run_dir) == log_dir / "metrics.csv"


def test_detection_fit_with_tensorboard_and_validate_pictures(shapes_coco: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    common = ["--config", DET_CONFIG, *det_data(shapes_coco), "--model.init_args.num_classes", "4", *TENSORBOARD]
    _run(tmp_path, ["fit", *common, *TINY, "--trainer.max_steps", "2", "--trainer.limit_train_batches", "2",
                    "--trainer.check_val_every_n_epoch", "1"], monkeypatch)
    run_dir = tmp_path / "runs" / "ssdlite_mobilenetv2_coco"
    log_dir = run_dir / "csv" / "version_0"  # the CSV logger's save_dir and name, kept by the switch
    assert not (log_dir / "metrics.csv").exists() and list(log_dir.glob("events.out.tfevents.*"))
    _check_curves(run_dir, log_dir, "val/map", tmp_path, monkeypatch)

    _run(tmp_path, ["validate", *common, *QUIET, "--model.init_args.post_processing.score_thresh", "0.001",
                    "--ckpt_path", str(log_dir / "checkpoints" / "last.ckpt")], monkeypatch)
    folder = run_dir / "csv" / "version_1" / "validate"
    assert _valid_png(folder / "pr_curves.png")[0] > 800
    _valid_png(folder / "confusion_matrix.png")
    lines = (folder / "confusion_matrix.csv").read_text().splitlines()
    assert lines[0].split(",")[1:] == ["circle", "square", "triangle", "cross", "background"]
    matrix = np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]])
    # Every ground-truth box of the val split is counted once in its class's row, found or missed.
    val = json.loads((shapes_coco / "annotations" / "instances_val2017.json").read_text())
    categories = sorted(c["id"] for c in val["categories"])  # labels 1..K in category id order
    per_class = [sum(a["category_id"] == c and not a["iscrowd"] for a in val["annotations"]) for c in categories]
    assert matrix[:4].sum(1).tolist() == per_class
