"""Trained runs the export and inference tests share: SSDLite and DeepLabv3-lite, a few steps through the CLI on
generated data in the real formats (COCO layout with gapped category ids; VOC layout)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mobilenetv2_dense.deploy.export import export
from mobilenetv2_dense.tasks.cli import cli_main
from tests.deploy.runs import CLS_CONFIG, CLS_DATA, DET_CONFIG, DET_POST, QUIET, SEG_CONFIG, SEG_DATA, det_data


@pytest.fixture(scope="session")
def det_run(shapes_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder, checkpoint) of SSDLite (width 0.35) trained 4 steps on the generated COCO-layout shapes."""
    folder = tmp_path_factory.mktemp("det_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli_main(["fit", "--config", DET_CONFIG, *det_data(shapes_coco), *QUIET, "--model.init_args.num_classes",
                  "4", "--model.init_args.width_mult", "0.35", "--trainer.max_steps", "4",
                  "--trainer.limit_val_batches", "0"])
    return folder, next(folder.rglob("last.ckpt"))


@pytest.fixture(scope="session")
def det_onnx(det_run: tuple[Path, Path], shapes_coco: Path) -> Path:
    folder, checkpoint = det_run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return export(["--config", DET_CONFIG, "--ckpt_path", str(checkpoint), "--format", "onnx", "--output",
                       str(folder / "export" / "det.onnx"), *det_data(shapes_coco), *DET_POST])


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder, checkpoint) of DeepLabv3-lite (width 0.35) trained 3 steps on the generated VOC-layout shapes."""
    folder = tmp_path_factory.mktemp("seg_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli_main(["fit", "--config", SEG_CONFIG, *SEG_DATA, *QUIET, "--model.init_args.width_mult", "0.35",
                  "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0"])
    return folder, next(folder.rglob("last.ckpt"))




@pytest.fixture(scope="session")
def cls_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder, checkpoint) of the shapes classifier (width 0.35) trained 3 steps on its generated image folders."""
    folder = tmp_path_factory.mktemp("cls_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli_main(["fit", "--config", CLS_CONFIG, *CLS_DATA, *QUIET, "--model.init_args.width_mult", "0.35",
                  "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0"])
    return folder, next(folder.rglob("last.ckpt"))


@pytest.fixture(scope="session")
def seg_onnx(seg_run: tuple[Path, Path]) -> Path:
    """The DeepLabv3-lite run exported to ONNX (logits), parity figures on its 3 validation images."""
    folder, checkpoint = seg_run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return export(["--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), *SEG_DATA, "--output",
                       str(folder / "export" / "seg.onnx")])
