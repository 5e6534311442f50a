"""Checkpoints and configs from before the ``mobilenetv2_dense`` package: refused with the fix, then upgraded."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
from pathlib import Path

import pytest
import torch

from mobilenetv2_dense.tasks.cli import LegacyCheckpointError, cli_main
from mobilenetv2_dense.tasks.upgrade import main as upgrade_main
from mobilenetv2_dense.tasks.upgrade import new_class_path, upgrade_config

PREFIX = "mobilenetv2_dense."
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SEG_DEMO = str(CONFIGS / "deeplabv3lite_shapes_demo.yaml")
SEG_DATA = ["--data.init_args.num_train", "4", "--data.init_args.num_val", "2", "--data.init_args.image_size",
            "[48, 64]", "--data.init_args.crop_size", "48", "--data.init_args.batch_size", "2",
            "--data.init_args.val_batch_size", "2", "--data.init_args.num_workers", "0",
            "--model.init_args.width_mult", "0.35", "--model.init_args.channels_last", "false",
            "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]

# Every class path the configs and README named before the package (git 27b71dd), and the classes pickled
# into checkpoints' hyper-parameters.
LEGACY_CLASS_PATHS = [
    "tasks.classification.ClassificationTask", "tasks.classification.ImageFolderDataModule",
    "tasks.classification.ShapesImageFolderDataModule", "tasks.detection.COCODataModule",
    "tasks.detection.DetectionTask", "tasks.detection.ShapesCOCODataModule", "tasks.detection.VOCDetectionDataModule",
    "tasks.detection.visualize.DetectionPredictionWriter", "tasks.segmentation.data.VOCSegmentationDataModule",
    "tasks.segmentation.module.SegmentationTask", "tasks.segmentation.shapes.ShapesVOCDataModule",
    "tasks.segmentation.visualize.SegmentationPredictionWriter",
    "tasks.optim.Optimization", "tasks.detection.transforms.DetectionAugment",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("old", LEGACY_CLASS_PATHS)
def test_every_legacy_class_path_maps_to_an_importable_class(old: str) -> None:
    module, _, name = new_class_path(old).rpartition(".")
    assert module.startswith("mobilenetv2_dense.")
    assert isinstance(getattr(importlib.import_module(module), name), type)


def _as_old_layout(checkpoint_path: Path, out: Path, *, python_built: bool) -> Path:
    """``checkpoint_path`` as the old layout wrote it: the ``_class_path`` string under the old module path and,
    for a task built in Python (``optimization=Optimization(...)``), the pickled dataclass under its old module."""
    from mobilenetv2_dense.tasks.optim import Optimization

    checkpoint = torch.load(checkpoint_path, weights_only=False)
    old_of = {new_class_path(old): old for old in LEGACY_CLASS_PATHS}
    hparams = checkpoint["hyper_parameters"]
    hparams["_class_path"] = old_of.get(hparams["_class_path"], hparams["_class_path"].removeprefix(PREFIX))
    if not python_built:
        torch.save(checkpoint, out)
        return out
    hparams["optimization"] = Optimization(**hparams["optimization"])
    new_module, old_module = Optimization.__module__, old_of[f"{Optimization.__module__}.Optimization"][:-13]
    try:  # pickle writes GLOBAL <__module__> <name>: give the class its old module for this save
        sys.modules[old_module] = types.SimpleNamespace(Optimization=Optimization)
        Optimization.__module__ = old_module
        torch.save(checkpoint, out)
    finally:
        sys.modules.pop(old_module, None)
        Optimization.__module__ = new_module
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli_main(["fit", "--config", SEG_DEMO, *SEG_DATA, "--trainer.max_steps", "2",
                  "--trainer.limit_val_batches", "0"])
    return next((folder / "runs").rglob("last.ckpt"))


def _run_folder(checkpoint: Path) -> Path:
    """The folder the fixture trained in (holding runs/ and the generated data/)."""
    return next(p for p in checkpoint.parents if (p / "runs").is_dir() and (p / "data").is_dir())


def test_old_cli_checkpoint_loads_as_it_is(trained: Path, tmp_path: Path, monkeypatch) -> None:
    """A checkpoint written by the old CLI only names its task class as a string: the CLI reads it directly."""
    monkeypatch.chdir(_run_folder(trained))
    legacy = _as_old_layout(trained, tmp_path / "legacy.ckpt", python_built=False)
    assert torch.load(legacy, weights_only=True)["hyper_parameters"]["_class_path"].startswith("tasks.")
    cli = cli_main(["validate", "--config", SEG_DEMO, *SEG_DATA, "--ckpt_path", str(legacy)])
    assert type(cli.model).__module__ == "mobilenetv2_dense.tasks.segmentation.module"
    assert "val/miou" in cli.trainer.callback_metrics


def test_old_python_checkpoint_is_refused_with_the_command_then_upgraded(trained: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    monkeypatch.chdir(_run_folder(trained))
    legacy = _as_old_layout(trained, tmp_path / "legacy.ckpt", python_built=True)
    assert b"tasks.optim" in legacy.read_bytes()

    with pytest.raises(LegacyCheckpointError, match=r"tasks\.optim\.Optimization.*python -m mobilenetv2_dense\."
                                                    r"tasks\.upgrade .*legacy\.ckpt"):
        cli_main(["validate", "--config", SEG_DEMO, *SEG_DATA, "--ckpt_path", str(legacy)])

    upgrade_main([str(legacy)])
    upgraded = tmp_path / "legacy-upgraded.ckpt"
    before, after = torch.load(trained, weights_only=True), torch.load(upgraded, weights_only=True)
    assert after["hyper_parameters"]["_class_path"] == before["hyper_parameters"]["_class_path"]
    assert dataclasses.asdict(after["hyper_parameters"]["optimization"]) == before["hyper_parameters"]["optimization"]
    assert after["state_dict"].keys() == before["state_dict"].keys()
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    cli = cli_main(["validate", "--config", SEG_DEMO, *SEG_DATA, "--ckpt_path", str(upgraded)])
    assert "val/miou" in cli.trainer.callback_metrics


def test_old_config_is_upgraded_and_instantiates(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = Path(SEG_DEMO).read_text()
    old_of = {new_class_path(old): old for old in LEGACY_CLASS_PATHS}
    for new, old in old_of.items():
        text = text.replace(f"class_path: {new}\n", f"class_path: {old}\n")
    old_config = tmp_path / "old.yaml"
    old_config.write_text(text.replace("class_path: mobilenetv2_dense.", "class_path: "))
    assert "class_path: mobilenetv2_dense." not in old_config.read_text()
    new_config = upgrade_config(old_config, tmp_path / "new.yaml")
    cli = cli_main(["--config", str(new_config), *SEG_DATA], run=False)
    assert type(cli.model).__name__ == "SegmentationTask" and type(cli.datamodule).__name__ == "ShapesVOCDataModule"
