"""Anchors fitted to the training boxes, through the entry points a user runs: ``fit --model.init_args.fit_anchors
true`` (the values reach the checkpoint, and ``validate --ckpt_path`` and the export command build the model with
them; a resumed fit does not fit again), the ``anchors`` command (its YAML loads as a second ``--config``), and the
data modules' ``train_boxes`` (the boxes the network sees, without decoding an image)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import mobilenetv2_dense.tasks.detection.anchors as anchors_module
from mobilenetv2_dense.__main__ import main as package_main
from mobilenetv2_dense.commands.cli import checkpoint_hyperparameters, cli_main
from mobilenetv2_dense.heads.anchors import AnchorSettings
from mobilenetv2_dense.tasks.detection import COCODataModule, DetectionTask, VOCDetectionDataModule
from tests.deploy.runs import CONFIGS, QUIET

THIN = str(CONFIGS / "ssdlite_thin_shapes.yaml")


def thin_data(root: Path) -> list[str]:
    """The thin-shapes config on 16 generated 96 px scenes (written under ``root`` on first use)."""
    return ["--data.init_args.root", str(root), "--data.init_args.num_train", "16", "--data.init_args.num_val", "4",
            "--data.init_args.scene_size", "96", "--data.init_args.image_size", "96", "--data.init_args.batch_size",
            "4", "--data.init_args.num_workers", "0"]


def run_in(folder: Path, args: list[str]):
    """The CLI on ``args`` with ``folder`` as working directory (the config's runs/ lands there)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return cli_main(args)


DEFAULT_SETTINGS = AnchorSettings()
ANCHOR_ARGS = tuple(AnchorSettings().plain())  # the fields of the anchors block


def anchor_values(settings: AnchorSettings | dict) -> dict:
    """The anchor fields, plain: of AnchorSettings, or of a checkpoint's hyper-parameters (their ``anchors``)."""
    if isinstance(settings, dict):
        settings = settings.get("anchors") or AnchorSettings()
        settings = settings if isinstance(settings, AnchorSettings) else AnchorSettings(**settings)
    return settings.plain()


@pytest.fixture(scope="module")
def thin_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(folder, data root, last checkpoint) of 2 steps at width 0.35 with fit_anchors."""
    folder = tmp_path_factory.mktemp("thin_run")
    data = folder / "thin"
    run_in(folder, ["fit", "--config", THIN, *thin_data(data), *QUIET, "--model.init_args.backbone.width_mult", "0.35",
                    "--model.init_args.fit_anchors", "true", "--trainer.max_steps", "2",
                    "--trainer.limit_val_batches", "0"])
    return folder, data, next(folder.rglob("last.ckpt"))


def test_fit_anchors_reach_the_checkpoint_and_validate_and_export_build_them(thin_run):
    folder, data, checkpoint = thin_run
    fitted = anchor_values(checkpoint_hyperparameters(checkpoint))
    assert fitted != anchor_values(DEFAULT_SETTINGS)
    assert fitted["scales"] is not None and len(fitted["lowest_layer_boxes"]) == 3
    assert len(fitted["aspect_ratios"]) == 5 and max(fitted["aspect_ratios"]) > 3  # thin objects, thin anchors

    cli = run_in(folder, ["validate", "--config", THIN, *thin_data(data), *QUIET, "--ckpt_path", str(checkpoint),
                          "--trainer.limit_val_batches", "1"])
    assert anchor_values(cli.model.model.anchor_settings) == fitted
    assert cli.model.model.head.num_anchors == [3, 6, 6, 6, 6, 6]

    from mobilenetv2_dense.commands.export import build_task

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        task, _, _ = build_task(THIN, str(checkpoint), thin_data(data))
    assert anchor_values(task.model.anchor_settings) == fitted
    # Lightning's own loader of a CLI-written checkpoint (its instantiator takes plain values, not dataclasses)
    assert anchor_values(DetectionTask.load_from_checkpoint(checkpoint).model.anchor_settings) == fitted


def test_a_resumed_fit_keeps_the_checkpoint_anchors(thin_run, tmp_path: Path, monkeypatch, caplog):
    _, data, checkpoint = thin_run

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed fit fitted the anchors again")

    monkeypatch.setattr(anchors_module, "fit_model_anchors", refuse)
    with caplog.at_level("INFO"):
        run_in(tmp_path, ["fit", "--config", THIN, *thin_data(data), *QUIET, "--ckpt_path", str(checkpoint),
                          "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0"])
    assert "its anchors are kept, not fitted again" in caplog.text
    resumed = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(resumed, weights_only=True)["global_step"] == 3
    assert anchor_values(checkpoint_hyperparameters(resumed)) == anchor_values(
        checkpoint_hyperparameters(checkpoint))


def test_anchors_command_writes_a_config_that_loads(thin_run, tmp_path: Path, capsys):
    _, data, _ = thin_run
    output = tmp_path / "fitted.yaml"
    package_main(["anchors", "--config", THIN, *thin_data(data), "--generations", "100", "--output", str(output)])
    printed = capsys.readouterr().out
    assert "best possible recall" in printed and "mean best IoU" in printed
    before, after = (float(v) for v in printed.split("after SSD's matching): ")[1].split()[0:3:2])
    assert after > before
    values = yaml.safe_load(output.read_text())["model"]["init_args"]["anchors"]
    assert set(values) == set(ANCHOR_ARGS)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        cli = cli_main(["--config", THIN, "--config", str(output), *thin_data(data)], run=False)
    assert anchor_values(cli.model.model.anchor_settings) == values
    assert cli.model.hparams.backbone["width_mult"] == 0.5  # the rest of the experiment's config is kept


def test_anchors_command_refuses_a_model_that_is_not_a_detector(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match="builds a SegmentationTask; anchors belong to detectors"):
        package_main(["anchors", "--config", str(CONFIGS / "deeplabv3lite_shapes_demo.yaml"),
                      "--model.init_args.num_classes", "3"])


def test_train_boxes_are_the_resized_boxes_the_network_sees(shapes_coco: Path, voc_root: Path):
    datamodule = COCODataModule(shapes_coco, image_size=64, num_workers=0)
    boxes = datamodule.train_boxes()
    resized = datamodule.make_dataset("train", datamodule.eval_transform())  # decodes, as training does
    assert len(boxes) == len(resized) and sum(map(len, boxes)) > 0
    for i in range(len(resized)):
        torch.testing.assert_close(boxes[i], resized[i][1]["boxes"], rtol=0, atol=1e-3)
    # VOC: difficult objects are no training boxes; v0 (64 x 48) holds a cat at x 4..24, y 6..30 (0-based edges)
    voc = VOCDetectionDataModule(str(voc_root), image_size=32, num_workers=0).train_boxes()
    torch.testing.assert_close(voc[0], torch.tensor([[4 * 32 / 64, 6 * 32 / 48, 24 * 32 / 64, 30 * 32 / 48]]))
    assert [len(b) for b in voc] == [1, 1]
