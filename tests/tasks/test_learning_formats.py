"""The new data formats learn: generated shapes written in each format, trained from scratch through the entry point
a user runs (``fit`` then ``validate`` with ``cli_main``, a real Trainer, the shipped config), scored well above
what guessing gets.

- image / mask folders with RGB colour masks and a classes YAML holding the colours: ``SegmentationFolderDataModule``
  through ``configs/deeplabv3lite_folder_example.yaml``;
- YOLO files written by the ``convert`` command from the shapes demo config: ``YOLODataModule`` through
  ``configs/ssdlite_mobilenetv2_yolo.yaml``.

The recipe is the demos' CPU recipe (AdamW lr 3e-3, dice for segmentation) at a small input size, one thread per
run (the ``one_thread`` fixture: these tensors are small, and two threads on a busy 2-core machine are many times
slower than one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mobilenetv2_dense.__main__ import main
from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.segmentation.shapes import SHAPES_CLASSES, label_map
from mobilenetv2_dense.datasets.segmentation.voc import IGNORE_INDEX
from mobilenetv2_dense.datasets.synthetic import render_scene

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUIET = ["--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]
ADAMW = ["--model.init_args.optimization.optimizer", "adamw", "--model.init_args.optimization.lr", "0.003",
         "--model.init_args.optimization.weight_decay", "1e-4", "--model.init_args.optimization.warmup_epochs", "0.5",
         "--model.init_args.optimization.reference_batch_size", "null"]

# Colour masks: class k drawn in SHAPE_COLOURS[k], void pixels in VOID_COLOUR.
SHAPE_COLOURS = [(0, 0, 0), (220, 20, 60), (0, 0, 142), (250, 170, 30), (107, 142, 35)]
VOID_COLOUR = (255, 255, 255)


def write_shapes_folders(root: Path, *, num_images: int, size: int, seed: int = 0) -> np.ndarray:
    """The shapes scenes as an image / mask folder set: ``root/images/train/<i>.jpg``, ``root/masks/train/<i>.png``
    (RGB in :data:`SHAPE_COLOURS`, VOC's void band around every object in :data:`VOID_COLOUR`) and
    ``root/classes.yaml`` (``names``, ``colors``, ``ignore_colors``).

    Returns the ``(K,)`` pixel count of each class over the masks (void left out).
    """
    table = np.zeros((256, 3), dtype=np.uint8)  # label -> colour: one lookup paints a whole mask
    table[: len(SHAPE_COLOURS)] = SHAPE_COLOURS
    table[IGNORE_INDEX] = VOID_COLOUR
    counts = np.zeros(len(SHAPES_CLASSES), dtype=np.int64)
    rng = np.random.default_rng(seed)
    (root / "images" / "train").mkdir(parents=True)
    (root / "masks" / "train").mkdir(parents=True)
    for i in range(num_images):
        objects = []
        while not objects:  # every scene shows a shape, as in the VOC-layout demo set
            image, objects = render_scene(rng, size, size, max_objects=4, min_size=0.2, max_size=0.6)
        labels = label_map(size, size, objects, void_width=1)
        Image.fromarray(image).save(root / "images" / "train" / f"{i:04d}.jpg", quality=92)
        Image.fromarray(table[labels]).save(root / "masks" / "train" / f"{i:04d}.png")
        counts += np.bincount(labels[labels != IGNORE_INDEX], minlength=len(SHAPES_CLASSES))
    (root / "classes.yaml").write_text(yaml.safe_dump({"names": list(SHAPES_CLASSES),
                                                       "colors": [list(c) for c in SHAPE_COLOURS],
                                                       "ignore_colors": [list(VOID_COLOUR)]}))
    return counts


def majority_miou(counts: np.ndarray) -> float:
    """The mIoU of predicting the most frequent class everywhere: its IoU is its pixel share, every other class
    present scores 0, and absent classes are left out of the mean (as ``SegmentationTask`` scores)."""
    return float(counts.max() / counts.sum() / np.count_nonzero(counts))


def test_segmentation_folders_with_colour_masks_learn_the_shapes(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepLabv3-lite (width 0.5, from scratch) on 24 generated 64x64 scenes as image / colour-mask folders, 80
    epochs of 3 steps, validated on the same folders (as the other segmentation learning test: from scratch, scenes
    it has not seen need several hundred steps more): mIoU must be far above the majority-class guess on these
    masks (about 0.17), where a wrong colour table or unlinked classes would leave it. A run measured 0.75."""
    data = tmp_path / "my_data"
    chance = majority_miou(write_shapes_folders(data, num_images=24, size=64))
    images, masks = data / "images" / "train", data / "masks" / "train"
    monkeypatch.chdir(tmp_path)  # the config's runs/ folder lands here
    common = ["--config", str(CONFIGS / "deeplabv3lite_folder_example.yaml"),
              f"--data.init_args.train_images={images}", f"--data.init_args.train_masks={masks}",
              f"--data.init_args.val_images={images}", f"--data.init_args.val_masks={masks}",
              f"--data.init_args.classes={data / 'classes.yaml'}", "--data.init_args.crop_size", "64",
              "--data.init_args.scale_range", "[1.0, 1.0]", "--data.init_args.batch_size", "8",
              "--data.init_args.val_batch_size", "8", "--data.init_args.num_workers", "0",
              "--data.init_args.pin_memory", "false", "--model.init_args.backbone.width_mult", "0.5",
              "--model.init_args.backbone.weights", "null", "--model.init_args.channels_last", "true",
              "--model.init_args.loss.dice_weight", "0.5", *ADAMW, *QUIET]
    fit = cli_main(["fit", *common, "--trainer.max_epochs", "80", "--trainer.check_val_every_n_epoch", "80"])
    assert fit.model.class_names == list(SHAPES_CLASSES)  # from the classes YAML, linked by the CLI

    validate = cli_main(["validate", *common, "--ckpt_path", str(next(tmp_path.rglob("last.ckpt")))])
    miou = float(validate.trainer.callback_metrics["val/miou"])
    assert miou > max(0.5, 3 * chance), (miou, chance)


def test_yolo_files_written_by_convert_learn_the_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``convert --to yolo`` writes 480 + 32 generated 96x96 scenes from the shapes demo config; SSDLite (width
    0.35, from scratch) trains 12 epochs on the YOLO files: mAP@0.5 on the 32 held-out scenes must be clearly above
    0, what a model that has not learned (or boxes read in the wrong frame) scores. A run measured 0.40; the
    learning starts late (in a run validating every 3 epochs: 0.01 at epoch 6, 0.36 at epoch 9)."""
    output = tmp_path / "my_yolo"
    main(["convert", "--config", str(CONFIGS / "ssdlite_shapes_demo.yaml"), "--data.init_args.root",
          str(tmp_path / "shapes"), "--data.init_args.num_train", "480", "--data.init_args.num_val", "32",
          "--data.init_args.scene_size", "96", "--data.init_args.object_size", "[0.25, 0.6]",
          "--to", "yolo", "--output", str(output)])
    monkeypatch.chdir(tmp_path)  # the config's runs/ folder lands here
    common = ["--config", str(CONFIGS / "ssdlite_mobilenetv2_yolo.yaml"),
              "--data.init_args.data_yaml", str(output / "data.yaml"), "--data.init_args.image_size", "96",
              "--data.init_args.batch_size", "16", "--data.init_args.num_workers", "0",
              "--data.init_args.pin_memory", "false",
              "--data.init_args.augment", "{photometric: false, max_zoom: 1.0, min_iou_crop: false, hflip: true}",
              "--model.init_args.backbone.width_mult", "0.35", "--model.init_args.channels_last", "true",
              *ADAMW, *QUIET]
    fit = cli_main(["fit", *common, "--trainer.max_epochs", "12", "--trainer.check_val_every_n_epoch", "12"])
    assert fit.datamodule.class_names == ["circle", "square", "triangle", "cross"]  # the data.yaml's names

    validate = cli_main(["validate", *common, "--ckpt_path", str(next(tmp_path.rglob("last.ckpt")))])
    map_50 = float(validate.trainer.callback_metrics["val/map_50"])
    assert map_50 > 0.2, map_50
