"""Classification folders: every split takes the training split's labels, whichever class folders it has."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mobilenetv2_dense.datasets.classification import ImageFolderDataset, classification_transforms
from mobilenetv2_dense.tasks.classification.datamodule import ImageFolderDataModule


def write_split(root: Path, classes: list[str]) -> None:
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (16, 16), (60 * k, 90, 30)).save(root / name / f"{name}.jpg")


def test_a_validation_split_without_a_class_keeps_the_training_labels(tmp_path: Path) -> None:
    write_split(tmp_path / "train", ["ant", "bee", "cat"])
    write_split(tmp_path / "val", ["ant", "cat"])  # no bee in val: cat must stay label 2, not become 1
    data = ImageFolderDataModule(str(tmp_path), image_size=16, num_workers=0)
    data.setup("fit")
    assert data.class_names == ["ant", "bee", "cat"]
    assert [(Path(path).parent.name, label) for path, label in data.val_dataset.samples] == [("ant", 0), ("cat", 2)]
    alone = ImageFolderDataset(tmp_path / "val", classification_transforms(16, train=False))
    assert [label for _, label in alone.samples] == [0, 1]  # read on its own, the folder is its own label set


def test_a_class_folder_the_training_split_lacks_is_named(tmp_path: Path) -> None:
    write_split(tmp_path / "val", ["ant", "dog"])
    with pytest.raises(ValueError, match=r"class folders \['dog'\] that the training split has not"):
        ImageFolderDataset(tmp_path / "val", classification_transforms(16, train=False), classes=["ant", "bee"])
