"""Augmentation through the CLI's real Trainer and loader workers: random across workers and epochs, and the same
for the same ``seed_everything`` (albumentations keeps its own RNG, which the loaders reseed from torch's)."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.classification.shapes import write_image_folder

ROOT = Path(__file__).resolve().parents[2]
CLASSIFICATION = str(ROOT / "configs" / "mobilenetv2_shapes_classification.yaml")
SEGMENTATION = str(ROOT / "configs" / "deeplabv3lite_shapes_demo.yaml")
DETECTION = str(ROOT / "configs" / "ssdlite_shapes_demo.yaml")
QUICK = ["--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"]


class RecordBatches(L.Callback):
    """Keeps ``(epoch, batch_idx) -> images`` of every training batch."""

    def __init__(self) -> None:
        self.images: dict[tuple[int, int], torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.images[trainer.current_epoch, batch_idx] = batch[0].detach().clone()


def train_batches(config: str, args: list[str], *, epochs: int = 1, batches: int = 2) -> dict:
    """The images of the first ``batches`` batches of each of ``epochs`` epochs of ``fit`` as the CLI builds it."""
    cli = cli_main(["--config", config, *QUICK, "--trainer.max_epochs", str(epochs),
                    "--trainer.limit_train_batches", str(batches), *args], run=False)
    recorder = RecordBatches()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, cli.datamodule)
    return recorder.images


@pytest.fixture(scope="module")
def one_image_folder(tmp_path_factory) -> Path:
    """The shapes classification layout where every image is the same file: batches differ only by augmentation."""
    root = write_image_folder(tmp_path_factory.mktemp("one_image"), images_per_class=4, image_size=48)
    first = next(root.glob("train/*/*.jpg"))
    for path in root.glob("*/*/*.jpg"):
        if path != first:
            shutil.copyfile(first, path)
    return root  # its marker (.complete, from write_image_folder): ShapesImageFolderDataModule does not rewrite it


def classification_args(root: Path, workers: int) -> list[str]:
    return ["--data.root", str(root), "--data.image_size", "32", "--data.batch_size", "4",
            "--data.num_workers", str(workers), "--model.backbone.width_mult", "0.35"]


@pytest.mark.parametrize("persistent", [False, True], ids=["workers", "persistent_workers"])
def test_workers_and_epochs_draw_different_augmentations(one_image_folder, tmp_path, monkeypatch, persistent):
    monkeypatch.chdir(tmp_path)
    images = train_batches(CLASSIFICATION, [*classification_args(one_image_folder, 2),
                                            "--data.persistent_workers", str(persistent).lower()], epochs=2)
    assert not torch.equal(images[0, 0], images[0, 1]), "worker 0 and worker 1 repeated each other's augmentation"
    assert not torch.equal(images[0, 0], images[1, 0]), "epoch 1 repeated epoch 0's augmentation"
    batch = images[0, 0]
    assert all(not torch.equal(batch[0], batch[i]) for i in range(1, len(batch)))


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_gives_the_same_batches(one_image_folder, tmp_path, monkeypatch, workers):
    monkeypatch.chdir(tmp_path)
    args = classification_args(one_image_folder, workers)
    first = train_batches(CLASSIFICATION, [*args, "--seed_everything", "5"])
    again = train_batches(CLASSIFICATION, [*args, "--seed_everything", "5"])
    other = train_batches(CLASSIFICATION, [*args, "--seed_everything", "6"])
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first[0, 0], other[0, 0])


def first_batch(config: str, args: list[str]) -> torch.Tensor:
    """The images of the first training batch of the data module the CLI builds (seeded as ``fit`` seeds it)."""
    data = cli_main(["--config", config, *args], run=False).datamodule
    data.prepare_data()
    data.setup("fit")
    return next(iter(data.train_dataloader()))[0]


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("config", [SEGMENTATION, DETECTION], ids=["segmentation", "detection"])
def test_segmentation_and_detection_are_seeded_alike(config, workers, tmp_path_factory, monkeypatch):
    """The same loaders serve the other two tasks: the same seed gives the same augmented batch."""
    data = tmp_path_factory.getbasetemp() / f"data_{Path(config).stem}"  # written once, shared by the runs
    monkeypatch.chdir(tmp_path_factory.mktemp("run"))
    if config == SEGMENTATION:
        args = ["--data.root", str(data), "--data.num_train", "8", "--data.num_val", "2", "--data.image_size",
                "[48, 64]", "--data.crop_size", "48", "--data.batch_size", "4"]
    else:
        args = ["--data.root", str(data), "--data.num_train", "8", "--data.num_val", "2", "--data.scene_size", "64",
                "--data.image_size", "64", "--data.batch_size", "4"]
    args += ["--data.num_workers", str(workers)]
    first = first_batch(config, [*args, "--seed_everything", "3"])
    assert torch.equal(first, first_batch(config, [*args, "--seed_everything", "3"]))
    assert not torch.equal(first, first_batch(config, [*args, "--seed_everything", "4"]))
