"""Classification task and image-folder data: one real run through the CLI, bad images, accuracy metrics."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.checks import DatasetError, DatasetWarning
from mobilenetv2_dense.datasets.classification import ImageFolderDataset, classification_transforms
from mobilenetv2_dense.datasets.classification.shapes import write_image_folder
from mobilenetv2_dense.tasks.classification import ClassificationTask

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "mobilenetv2_shapes_classification.yaml")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("folder"), images_per_class=8, image_size=64)


def test_fast_dev_run_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", "--config", CONFIG, "--trainer.fast_dev_run", "2", "--data.init_args.root",
                    str(tmp_path / "shapes"), "--data.init_args.images_per_class", "6",
                    "--data.init_args.image_size", "64", "--data.init_args.num_workers", "0",
                    "--data.init_args.batch_size", "4"])
    assert cli.trainer.state.finished
    assert "train/loss_step" in cli.trainer.logged_metrics or "train/loss" in cli.trainer.logged_metrics
    assert "val/acc1" in cli.trainer.logged_metrics
    assert (tmp_path / "shapes" / "train" / "circle").is_dir()


def test_corrupt_and_truncated_images_are_reported(image_folder, tmp_path):
    root = tmp_path / "folder"
    shutil.copytree(image_folder / "train", root)
    good = sorted((root / "circle").glob("*.jpg"))
    (root / "circle" / "broken.jpg").write_bytes(b"not an image")
    data = good[0].read_bytes()
    (root / "square" / "cut.jpg").write_bytes(data[: len(data) // 2])
    transform = classification_transforms(32, train=False)
    with pytest.warns(DatasetWarning, match=r"broken\.jpg"):
        dataset = ImageFolderDataset(root, transform)
    assert len(dataset) == 4 * 6
    with pytest.raises(DatasetError, match=r"cut\.jpg"):
        ImageFolderDataset(root, transform, strict=True)


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((40, 40), 128, np.uint8), mode="L").save(tmp_path / "a" / "gray.png")
    Image.fromarray(np.full((40, 40, 4), 200, np.uint8), mode="RGBA").save(tmp_path / "a" / "rgba.png")
    dataset = ImageFolderDataset(tmp_path, classification_transforms(32, train=True))
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert image.shape == (3, 32, 32) and label == 0


def test_top1_and_top5_accuracy_are_computed_over_the_epoch():
    task = ClassificationTask(num_classes=6, backbone=BackboneSettings(width_mult=0.35))
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]])
    labels = torch.tensor([0, 0])  # first: top-1 right; second: label 0 ranks last (outside the top 5)
    task.val_acc1(logits, labels)
    task.val_acc5(logits, labels)
    assert task.val_acc1.compute() == pytest.approx(0.5)
    assert task.val_acc5.compute() == pytest.approx(0.5)


def test_num_classes_mismatch_is_explained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"num_classes=3 but the data has 4 classes"):
        cli_main(["fit", "--config", CONFIG, "--trainer.fast_dev_run", "1", "--model.init_args.num_classes", "3",
                  "--data.init_args.root", str(tmp_path / "shapes"), "--data.init_args.images_per_class", "4",
                  "--data.init_args.image_size", "48", "--data.init_args.num_workers", "0"])
