"""The generated classification set: its folder layout and marker, and that only the shape tells the classes apart."""

import json

import numpy as np
import pytest

from mobilenetv2_dense.datasets.classification import ImageFolderDataset, classification_transforms, shapes
from mobilenetv2_dense.datasets.classification.shapes import shape_image, write_image_folder, written_settings
from mobilenetv2_dense.datasets.synthetic import SHAPE_CLASSES
from mobilenetv2_dense.tasks.classification import ShapesImageFolderDataModule

SIZE, PER_CLASS = 32, 40  # shape_image at 32 px: about 1 ms an image


@pytest.fixture(scope="module")
def drawn() -> dict[str, np.ndarray]:
    """``images (K*n, S, S, 3)`` uint8, ``masks (K*n, S, S)`` bool and ``labels (K*n,)`` from 1, drawn in turn."""
    rng = np.random.default_rng(7)
    labels = np.tile(np.arange(1, len(SHAPE_CLASSES) + 1), PER_CLASS)
    images, masks = zip(*(shape_image(rng, SIZE, int(label)) for label in labels))
    return {"images": np.stack(images), "masks": np.stack(masks), "labels": labels}


def nearest_mean_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Fit class means of ``features (n, F)`` on the first half, return the accuracy on the second half."""
    half = len(labels) // 2
    classes = np.unique(labels)
    means = np.stack([features[:half][labels[:half] == k].mean(0) for k in classes])  # (K, F)
    scale = features[:half].std(0) + 1e-9
    distance = (((features[half:, None] - means[None]) / scale) ** 2).sum(-1)  # (n/2, K)
    return float((classes[distance.argmin(1)] == labels[half:]).mean())


def test_layout_balance_and_marker(tmp_path):
    root = write_image_folder(tmp_path / "shapes", images_per_class=8, image_size=SIZE, seed=3)
    for split, count in (("train", 6), ("val", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(SHAPE_CLASSES)
        assert all(len(list((root / split / name).glob("*.jpg"))) == count for name in SHAPE_CLASSES)
    dataset = ImageFolderDataset(root / "train", classification_transforms(SIZE, train=False))
    assert dataset.classes == sorted(SHAPE_CLASSES) and len(dataset) == 4 * 6
    assert np.bincount([label for _, label in dataset.samples]).tolist() == [6, 6, 6, 6]
    assert written_settings(root) == {"generator": shapes.GENERATOR, "images_per_class": 8, "val_fraction": 0.25,
                                      "image_size": SIZE, "seed": 3}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    files = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        root = write_image_folder(tmp_path / name, images_per_class=2, image_size=SIZE, seed=seed)
        files[name] = {p.relative_to(root): p.read_bytes() for p in sorted(root.glob("*/*/*.jpg"))}
    assert files["a"] == files["b"]
    assert files["a"].keys() == files["c"].keys() and files["a"] != files["c"]


def test_rewrite_replaces_an_older_generators_folder(tmp_path):
    root = write_image_folder(tmp_path / "shapes", images_per_class=8, image_size=SIZE)
    (root / shapes.MARKER).write_text("ok\n")  # what the previous generator (render_scene scenes) left
    assert written_settings(root) == {}
    ShapesImageFolderDataModule(str(root), SIZE, images_per_class=4).prepare_data()
    assert len(list(root.glob("train/*/*.jpg"))) == 4 * 3  # the 8-per-class files are gone, not mixed in
    assert json.loads((root / shapes.MARKER).read_text())["generator"] == shapes.GENERATOR
    before = {p: p.stat().st_mtime_ns for p in root.glob("*/*/*.jpg")}
    ShapesImageFolderDataModule(str(root), 2 * SIZE, images_per_class=4).prepare_data()  # other settings: kept
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/*/*.jpg")} == before


def test_every_shape_is_inside_the_eval_crop_and_stands_out(drawn):
    masks, images = drawn["masks"], drawn["images"].astype(float)
    border = SIZE // 16  # classification_transforms(train=False) crops 1/16 of each side
    assert not masks[:, :border].any() and not masks[:, -border:].any()
    assert not masks[:, :, :border].any() and not masks[:, :, -border:].any()
    area = masks.mean((1, 2))  # (n,)
    assert area.min() > shapes.AREA_RANGE[0] * 0.7 and area.max() < shapes.AREA_RANGE[1] * 1.3  # edge pixels: +-0.5 px
    luma = images @ np.array([0.299, 0.587, 0.114])  # (n, S, S)
    inside = (luma * masks).sum((1, 2)) / masks.sum((1, 2))
    outside = (luma * ~masks).sum((1, 2)) / (~masks).sum((1, 2))
    assert np.abs(inside - outside).min() > shapes.MIN_CONTRAST - 20  # stripes and noise move the means a little


def test_classes_differ_in_shape_not_in_colour_or_area(drawn):
    images, masks, labels = drawn["images"].astype(float), drawn["masks"], drawn["labels"]
    colour = np.concatenate([images.mean((1, 2)), images.std((1, 2))], axis=1)  # (n, 6) mean and spread of RGB
    area = masks.mean((1, 2))[:, None]
    assert nearest_mean_accuracy(colour, labels) < 0.4  # chance is 0.25
    assert nearest_mean_accuracy(area, labels) < 0.4
    # the shape itself: Hu's first moment invariant (eta20 + eta02), blind to position, size, rotation and colour:
    # 1/(2 pi) = .159 for a disc, 1/6 for a square, .176 for this cross, .192 for an equilateral triangle
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    count = masks.sum((1, 2))
    cy, cx = (masks * ys).sum((1, 2)) / count, (masks * xs).sum((1, 2)) / count
    inertia = (((ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2) * masks).sum((1, 2)) / count ** 2
    assert nearest_mean_accuracy(inertia[:, None], labels) > 0.9
