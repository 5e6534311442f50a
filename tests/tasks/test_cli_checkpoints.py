"""Runs from a checkpoint through the entry point (``train_task.cli_main``): what the checkpoint sets, what the
command line overrides, and that nothing is downloaded or read besides the checkpoint."""

from __future__ import annotations

import json
import logging
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.commands.cli import cli_main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SEG_DEMO = str(CONFIGS / "deeplabv3lite_shapes_demo.yaml")
SEG_DATA = ["--data.init_args.num_train", "4", "--data.init_args.num_val", "2", "--data.init_args.image_size",
            "[48, 64]", "--data.init_args.crop_size", "48", "--data.init_args.batch_size", "2",
            "--data.init_args.val_batch_size", "2", "--data.init_args.num_workers", "0"]
QUIET = ["--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _last_checkpoint(root: Path) -> Path:
    return next(root.rglob("last.ckpt"))


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the shapes demo config trained two steps at width 0.35 (the config says 0.5) and OS16."""
    folder = tmp_path_factory.mktemp("seg_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the config's relative data/ and runs/ folders land here
        cli_main(["fit", "--config", SEG_DEMO, *SEG_DATA, *QUIET, "--model.init_args.backbone.width_mult", "0.35",
                  "--model.init_args.channels_last", "false", "--trainer.max_steps", "2",
                  "--trainer.limit_val_batches", "0"])
    return folder


@pytest.fixture
def in_seg_run(seg_run: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(seg_run)
    return _last_checkpoint(seg_run / "runs")


@pytest.fixture
def no_backbone_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if anything downloads or reads backbone weights."""
    import torchvision.models._api

    import mobilenetv2_dense.backbone.weights

    def refuse(*args, **kwargs):
        raise AssertionError("backbone weights were read although the checkpoint holds them")

    monkeypatch.setattr(mobilenetv2_dense.backbone.weights, "_read", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)


def _record_validation(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """(backbone output stride, evaluation flip, evaluation scales) of every validation batch, as the task ran it."""
    from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask

    seen: list[tuple] = []

    def record(self, batch, batch_idx, dataloader_idx=0):
        seen.append((self.model.output_stride, self.evaluation.flip, tuple(self.evaluation.scales)))

    monkeypatch.setattr(SegmentationTask, "on_validation_batch_start", record, raising=False)
    return seen


# ------------------------------------------------------------------------------------------------ precedence
def test_command_line_wins_over_the_checkpoint(in_seg_run: Path, monkeypatch, caplog) -> None:
    """The paper's evaluation (docs/segmentation.md): the OS8 + flip options typed with --ckpt_path must be the ones
    that run."""
    seen = _record_validation(monkeypatch)
    caplog.set_level(logging.INFO)
    plain = cli_main(["validate", "--config", SEG_DEMO, *SEG_DATA, *QUIET, "--ckpt_path", str(in_seg_run)])
    assert seen and {s[:2] for s in seen} == {(16, False)}
    seen.clear()
    os8 = cli_main(["validate", "--config", SEG_DEMO, *SEG_DATA, *QUIET, "--ckpt_path", str(in_seg_run),
                    "--model.init_args.evaluation.output_stride", "8", "--model.evaluation.flip", "true",
                    "--model.init_args.evaluation.scales", "[0.75, 1.0]"])
    assert seen and set(seen) == {(8, True, (0.75, 1.0))}
    assert os8.model.evaluation.output_stride == 8
    assert float(os8.trainer.callback_metrics["val/loss"]) != float(plain.trainer.callback_metrics["val/loss"])
    report = caplog.text
    assert "model.init_args.evaluation.output_stride: 8 from the command line (checkpoint: None)" in report
    assert "model.init_args.backbone.width_mult: 0.35 from the checkpoint (config: 0.5)" in report


def test_architecture_in_the_config_file_comes_from_the_checkpoint(in_seg_run: Path) -> None:
    """The config says width 0.5 and channels_last; the checkpoint was trained at 0.35 without: its values load."""
    cli = cli_main(["validate", "--config", SEG_DEMO, *SEG_DATA, *QUIET, "--ckpt_path", str(in_seg_run)])
    assert cli.model.hparams.backbone["width_mult"] == 0.35 and cli.model.channels_last is False
    assert cli.model.output_stride == 16 and "val/miou" in cli.trainer.callback_metrics


def test_fit_resumes_from_the_checkpoint(in_seg_run: Path) -> None:
    cli = cli_main(["fit", "--config", SEG_DEMO, *SEG_DATA, *QUIET, "--ckpt_path", str(in_seg_run),
                    "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0"])
    assert torch.load(in_seg_run, weights_only=True)["global_step"] == 2
    assert cli.trainer.global_step == 3  # one more step, not three from scratch
    assert cli.model.hparams.backbone["width_mult"] == 0.35


# ---------------------------------------------------------------------------------------- no backbone weights
@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "/gone/mobilenet_v2-b0353104.pth"])
def test_checkpoint_loads_without_its_backbone_weights(in_seg_run: Path, weights: str, no_backbone_weights,
                                                       tmp_path: Path) -> None:
    """A checkpoint whose hyper-parameters name ImageNet weights (or a file since removed) validates, predicts,
    resumes and loads offline."""
    from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask

    checkpoint = torch.load(in_seg_run, weights_only=True)
    checkpoint["hyper_parameters"]["backbone"]["weights"] = weights
    path = tmp_path / "trained_from_imagenet.ckpt"
    torch.save(checkpoint, path)

    validate = cli_main(["validate", "--config", SEG_DEMO, *SEG_DATA, *QUIET, "--ckpt_path", str(path)])
    assert "val/miou" in validate.trainer.callback_metrics
    images = Path("data/shapes_voc/VOCdevkit/VOC2012/JPEGImages")
    masks = cli_main(["predict", "--config", SEG_DEMO, *SEG_DATA, *QUIET, "--ckpt_path", str(path),
                      "--data.init_args.predict_images", str(images)]).trainer.predict_loop.predictions
    assert sum(len(batch) for batch in masks) == len(list(images.glob("*.jpg")))
    resumed = cli_main(["fit", "--config", SEG_DEMO, *SEG_DATA, *QUIET, "--ckpt_path", str(path),
                        "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0"])
    assert resumed.trainer.global_step == 3
    task = SegmentationTask.load_from_checkpoint(path)
    assert task.hparams.backbone.width_mult == 0.35  # built by load_from_checkpoint: a BackboneSettings
    torch.testing.assert_close(task.state_dict(), checkpoint["state_dict"])


def test_unreachable_torchvision_weights_name_the_option_and_the_fix(tmp_path: Path, monkeypatch) -> None:
    import torchvision.models._api

    from mobilenetv2_dense.backbone.weights import WeightsDownloadError

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsDownloadError) as error:
        cli_main(["fit", "--config", SEG_DEMO, "--model.init_args.backbone.weights", "IMAGENET1K_V1",
                  "--model.init_args.backbone.width_mult", "1.0"])
    message = str(error.value)
    assert message.startswith("model.init_args.backbone.weights='IMAGENET1K_V1': could not download")
    assert "Temporary failure in name resolution" in message
    assert "local .pth file" in message and "or to null" in message
    assert "Union" not in message


def test_segmentation_checkpoint_names_its_classes(in_seg_run: Path) -> None:
    """The class names travel in the checkpoint, so a task loaded without its data (predict, export) names them."""
    from mobilenetv2_dense.tasks.segmentation import ShapesVOCDataModule
    from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask

    checkpoint = torch.load(in_seg_run, weights_only=True)
    assert checkpoint["class_names"] == list(ShapesVOCDataModule.class_names)
    assert SegmentationTask.load_from_checkpoint(in_seg_run).class_names == checkpoint["class_names"]


# ---------------------------------------------------------------------------------- predict with a checkpoint
def test_detection_predict_needs_only_the_checkpoint(shapes_coco: Path, tmp_path: Path, monkeypatch) -> None:
    """COCO config, no COCO on this machine: names and category ids come from the checkpoint."""
    import mobilenetv2_dense.tasks.detection.writer as visualize  # where the writer draws
    from mobilenetv2_dense.datasets.synthetic import SHAPE_CLASSES

    monkeypatch.chdir(tmp_path)
    config = str(CONFIGS / "ssdlite_mobilenetv2_coco.yaml")
    small = ["--data.init_args.image_size", "96", "--data.init_args.num_workers", "0",
             "--data.init_args.pin_memory", "false"]
    cli_main(["fit", "--config", config, *small, *QUIET, "--data.init_args.root", str(shapes_coco),
              "--data.init_args.batch_size", "4", "--model.init_args.num_classes", "4",
              "--model.init_args.backbone.width_mult", "0.35", "--trainer.max_steps", "1"])
    checkpoint = _last_checkpoint(tmp_path / "runs")

    names_drawn = []
    draw = visualize.draw_detections
    monkeypatch.setattr(visualize, "draw_detections",
                        lambda *args, **kwargs: names_drawn.append(kwargs["class_names"]) or draw(*args, **kwargs))
    folder = tmp_path / "photos"
    shutil.copytree(shapes_coco / "val2017", folder)
    # num_classes (80 in the config) and width come from the checkpoint; the dataset root does not exist.
    cli_main(["predict", "--config", config, *small, *QUIET, "--ckpt_path", str(checkpoint),
              "--data.init_args.root", str(tmp_path / "no_coco_here"), "--data.init_args.predict_images", str(folder)])
    out = tmp_path / "runs" / "ssdlite_mobilenetv2_coco" / "predictions"
    assert len(list(out.glob("*.jpg"))) == len(list(folder.glob("*.jpg")))
    assert names_drawn and all(names == list(SHAPE_CLASSES) for names in names_drawn)
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 3, 7, 9}  # the shapes' gapped COCO ids
    assert {r["category_id"] for r in results} & {7, 9}  # not labels 1..4 written as they are


def test_segmentation_predict_needs_only_the_checkpoint(tmp_path: Path, monkeypatch, no_backbone_weights) -> None:
    """VOC config (ImageNet backbone weights, VOC under data/): neither is on this machine; a checkpoint built in
    Python (no class path, an Optimization in its hyper-parameters) is enough to segment a folder."""
    import lightning as L
    from PIL import Image
    from torch.utils.data import DataLoader, TensorDataset

    from mobilenetv2_dense.tasks.optim import Optimization
    from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask

    monkeypatch.chdir(tmp_path)
    task = SegmentationTask(num_classes=21, backbone=BackboneSettings(width_mult=0.35),
                            optimization=Optimization(lr=1e-3))
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, DataLoader(TensorDataset(torch.randn(2, 3, 32, 32), torch.randint(0, 21, (2, 32, 32)))))
    trainer.save_checkpoint(tmp_path / "voc.ckpt")
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, size in enumerate([(40, 30), (24, 36)]):
        Image.new("RGB", size, (40 * k, 90, 200)).save(folder / f"photo{k}.jpg")

    cli = cli_main(["predict", "--config", str(CONFIGS / "deeplabv3lite_mobilenetv2_voc.yaml"), *QUIET,
                    "--ckpt_path", str(tmp_path / "voc.ckpt"), "--data.init_args.predict_images", str(folder),
                    "--data.init_args.num_workers", "0"])
    assert cli.model.hparams.backbone["width_mult"] == 0.35 and cli.model.hparams.backbone["weights"] is None
    masks = tmp_path / "runs" / "deeplabv3lite_mobilenetv2_voc" / "predictions" / "masks"
    assert sorted(p.name for p in masks.glob("*.png")) == ["photo0.png", "photo1.png"]
    assert not (tmp_path / "data").exists()


def test_config_files_are_told_apart_from_typed_options() -> None:
    from mobilenetv2_dense.commands.cli import split_config_files

    args = ["--config", "a.yaml", "--model.init_args.evaluation.flip", "true", "-c", "b.yaml", "--config=c.yaml",
            "--ckpt_path", "x.ckpt"]
    assert split_config_files(args) == (["--config", "a.yaml", "-c", "b.yaml", "--config=c.yaml"],
                                        ["--model.init_args.evaluation.flip", "true", "--ckpt_path", "x.ckpt"])
