"""Trained runs the export and inference tests share: SSDLite, DeepLabv3-lite and the classifier at width 0.35, a
few steps through the CLI on generated data in the real formats (COCO layout with gapped category ids, VOC layout,
image folders), and their ONNX exports."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.commands.export import export
from tests.deploy.runs import CLS_CONFIG, CLS_DATA, DET_CONFIG, DET_POST, QUIET, SEG_CONFIG, SEG_DATA, det_data


def _in(folder: Path, command, args: list[str]):
    """``command(args)`` with ``folder`` as the working directory (the configs' relative data/ and runs/ land
    there)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return command(args)


def _fit(folder: Path, config: str, options: list[str], steps: int) -> tuple[Path, Path]:
    """(folder, last checkpoint) of ``config`` trained ``steps`` steps at width 0.35, without validation."""
    _in(folder, cli_main, ["fit", "--config", config, *options, *QUIET, "--model.init_args.backbone.width_mult", "0.35",
                           "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0"])
    return folder, next(folder.rglob("last.ckpt"))


@pytest.fixture(scope="session")
def det_run(shapes_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """SSDLite trained 4 steps on the generated COCO-layout shapes (the COCO config, 4 classes)."""
    return _fit(tmp_path_factory.mktemp("det_run"), DET_CONFIG,
                [*det_data(shapes_coco), "--model.init_args.num_classes", "4"], steps=4)


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """DeepLabv3-lite trained 3 steps on the generated VOC-layout shapes."""
    return _fit(tmp_path_factory.mktemp("seg_run"), SEG_CONFIG, SEG_DATA, steps=3)


@pytest.fixture(scope="session")
def cls_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shapes classifier trained 3 steps on its generated image folders."""
    return _fit(tmp_path_factory.mktemp("cls_run"), CLS_CONFIG, CLS_DATA, steps=3)


@pytest.fixture(scope="session")
def det_onnx(det_run: tuple[Path, Path], shapes_coco: Path) -> Path:
    """The SSDLite run exported to ONNX (45 candidates, 15 detections), parity figures on its 8 val images."""
    folder, checkpoint = det_run
    return _in(folder, export, ["--config", DET_CONFIG, "--ckpt_path", str(checkpoint), "--format", "onnx",
                                "--output", str(folder / "export" / "det.onnx"), *det_data(shapes_coco), *DET_POST])


@pytest.fixture(scope="session")
def seg_onnx(seg_run: tuple[Path, Path]) -> Path:
    """The DeepLabv3-lite run exported to ONNX (logits), parity figures on its 3 validation images; traced at 40 x 56,
    another size than the data's 48 crops and 48 x 64 images (H and W stay dynamic)."""
    folder, checkpoint = seg_run
    return _in(folder, export, ["--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), *SEG_DATA, "--image_size", "40",
                                "56", "--output", str(folder / "export" / "seg.onnx")])
