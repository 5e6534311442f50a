"""Every YAML in configs/ instantiates its model, data module and trainer (nothing runs, nothing downloads).

COCO and ImageNet are not on this machine: their configs are tested against a tiny dataset written in the real
layout at the configured (relative) root under a temporary folder, so their class count, category mapping and
transforms are checked as for the generated demo sets.
"""

import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mobilenetv2_dense.commands.cli import cli_main

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
# COCO 2017's 80 category ids: 1..90 without the 10 ids the paper's list left unused.
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]


def write_tiny_coco(root: Path) -> None:
    """``root/{train2017,val2017}`` with one 40x30 JPEG each and ``annotations/instances_*2017.json`` listing the
    80 COCO categories (ids with gaps), one box per image."""
    categories = [{"id": i, "name": f"category{i}"} for i in COCO_CATEGORY_IDS]
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True)
        Image.fromarray(np.full((30, 40, 3), 128, dtype=np.uint8)).save(root / split / "000000000001.jpg")
        dataset = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 30, "width": 40}],
                   "annotations": [{"id": 1, "image_id": 1, "category_id": 90, "bbox": [5, 5, 20, 15],
                                    "area": 300, "iscrowd": 0,
                                    "segmentation": [[5.0, 5.0, 25.0, 5.0, 25.0, 20.0, 5.0, 20.0]]}],
                   "categories": categories}
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(dataset))


def write_tiny_imagenet(root: Path) -> None:
    """``root/{train,val}/<wnid>/0.JPEG`` for 1,000 classes (one shared 16x16 JPEG, hard-linked)."""
    source = root / "source.JPEG"
    root.mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(source)
    for split in ("train", "val"):
        for index in range(1000):
            folder = root / split / f"n{index:08d}"
            folder.mkdir(parents=True)
            os.link(source, folder / "0.JPEG")
    source.unlink()


def write_tiny_yolo(data_yaml: Path) -> None:
    """``data_yaml`` naming three classes, and ``images/{train,val}/0.jpg`` (40x30) + ``labels/{train,val}/0.txt``
    beside it, one box each."""
    for split in ("train", "val"):
        (data_yaml.parent / "images" / split).mkdir(parents=True)
        (data_yaml.parent / "labels" / split).mkdir(parents=True)
        Image.fromarray(np.full((30, 40, 3), 128, dtype=np.uint8)).save(data_yaml.parent / "images" / split / "0.jpg")
        (data_yaml.parent / "labels" / split / "0.txt").write_text("2 0.5 0.5 0.5 0.5\n")
    data_yaml.write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b, c]\n")


# Data modules whose dataset is not generated on first use, with the writer of a tiny copy of its layout.
TINY_LAYOUTS = {"COCODataModule": write_tiny_coco, "COCOJointDataModule": write_tiny_coco,
                "ImageFolderDataModule": write_tiny_imagenet, "YOLODataModule": write_tiny_yolo}


def test_there_are_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_instantiates(config, tmp_path, monkeypatch):
    import mobilenetv2_dense.backbone.weights

    monkeypatch.chdir(tmp_path)  # runs/ and data/ paths stay in the tmp dir
    # ImageNet weights named in a config are an optional download: record the request instead of fetching.
    monkeypatch.setattr(mobilenetv2_dense.backbone.weights, "load_weights", lambda model, weights: None)
    # The model's num_classes comes from the data (commands/cli.py): the tiny copy is written before instantiation.
    data = yaml.safe_load(config.read_text())["data"]
    write_tiny = TINY_LAYOUTS.get(data["class_path"].rsplit(".", 1)[-1])
    if write_tiny is not None:
        root = Path(data["init_args"].get("root") or data["init_args"]["data_yaml"])
        assert not root.is_absolute(), f"{config.name}: data root {root} should be relative (set on the command line)"
        write_tiny(tmp_path / root)
    cli = cli_main(["--config", str(config)], run=False)
    assert isinstance(cli.model, L.LightningModule)
    assert isinstance(cli.datamodule, L.LightningDataModule)
    assert hasattr(cli.model, "model"), "each task keeps its network as self.model"
    names = {type(c).__name__ for c in cli.trainer.callbacks}
    assert "ModelCheckpoint" in names and cli.trainer.checkpoint_callback.save_last
    assert cli.trainer.progress_bar_callback is not None
    assert any(type(lg).__name__ == "CSVLogger" for lg in cli.trainer.loggers)
    assert cli.datamodule.num_classes == cli.model.num_classes
    if write_tiny is not None:
        if type(cli.datamodule).__name__ in ("COCODataModule", "COCOJointDataModule"):
            assert cli.datamodule.label_to_cat_id[80] == 90  # gapped ids map to contiguous labels
        cli.datamodule.setup("fit")
        image, _ = cli.datamodule.train_dataloader().dataset[0]  # through the config's transform
        size = cli.datamodule.image_size
        assert tuple(image.shape) == (3, size, size)


NORM_EVAL_CONFIGS = [c for c in CONFIGS if "norm_eval:" in c.read_text()]


@pytest.mark.parametrize("config", NORM_EVAL_CONFIGS, ids=[c.stem for c in NORM_EVAL_CONFIGS])
def test_norm_eval_reaches_the_backbone_from_the_config(config, tmp_path, monkeypatch):
    """The switch the detection and segmentation configs show is wired to the backbone (its effect during fit is
    tested in tests/tasks/test_detection_task.py)."""
    import mobilenetv2_dense.backbone.weights

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mobilenetv2_dense.backbone.weights, "load_weights", lambda model, weights: None)
    # num_classes given: the CLI would otherwise read it from the dataset, absent here
    cli = cli_main(["--config", str(config), "--model.init_args.backbone.norm_eval", "true",
                    "--model.init_args.num_classes", "3"], run=False)
    network = cli.model.model.backbone
    assert network.norm_eval
    batch_norms = [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms)


def test_detection_and_segmentation_configs_show_norm_eval():
    stems = {c.stem for c in NORM_EVAL_CONFIGS}
    assert {"ssdlite_mobilenetv2_coco", "ssdlite_mobilenetv2_voc", "deeplabv3_mobilenetv2_voc",
            "deeplabv3lite_mobilenetv2_voc"} <= stems


FROM_SCRATCH_CONFIGS = [c for c in CONFIGS if c.stem in
                        ("ssdlite_shapes_demo", "ssdlite_mobilenetv2_coco", "ssdlite_mobilenetv2_voc")]


@pytest.mark.parametrize("config", FROM_SCRATCH_CONFIGS, ids=[c.stem for c in FROM_SCRATCH_CONFIGS])
def test_detection_configs_train_from_scratch_with_the_measured_defaults(config, tmp_path, monkeypatch):
    """backbone_init normal, fit_anchors and matching at IoU 0.4 (docs/benchmarks/train_vs_peers.md) reach the task
    from each detection config, and the command line sets the paper's values back."""
    monkeypatch.chdir(tmp_path)
    common = ["--config", str(config), "--model.init_args.num_classes", "3", "--model.init_args.backbone.width_mult",
              "0.35"]
    cli = cli_main(common, run=False)
    assert cli.model.hparams.fit_anchors and cli.model.criterion.settings.iou_threshold == 0.4
    assert cli.model.hparams.backbone["init"] == "normal"
    convs = [m.weight for m in cli.model.model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert abs(torch.cat([w.flatten() for w in convs]).std().item() - 0.03) < 2e-3
    paper = cli_main([*common, "--model.init_args.fit_anchors", "false", "--model.init_args.loss.iou_threshold", "0.5",
                      "--model.init_args.backbone.init", "kaiming"], run=False)
    assert not paper.model.hparams.fit_anchors and paper.model.criterion.settings.iou_threshold == 0.5
    stem_conv = paper.model.model.backbone.stem[0].weight  # He normal, fan out: std sqrt(2 / (C_out * 9))
    assert abs(stem_conv.std().item() - (2 / (stem_conv.shape[0] * 9)) ** 0.5) < 0.03
