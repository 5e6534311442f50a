"""``model.init_args.inference``: validate / predict run a Conv+BN folded or compiled copy of the network and give
the eager run's metrics and files; ``fit``'s own validations keep the training network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mobilenetv2_dense.deploy.fuse as fuse
from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.tasks.segmentation import SegmentationTask
from tests.deploy.runs import DET_CONFIG, DET_POST, QUIET, SEG_CONFIG, SEG_DATA, det_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _folds(monkeypatch: pytest.MonkeyPatch) -> list[torch.nn.Module]:
    """The networks fold_conv_bn made, to see which network a run used."""
    calls = []
    fold = fuse.fold_conv_bn
    monkeypatch.setattr(fuse, "fold_conv_bn", lambda model, **kw: calls.append(fold(model, **kw)) or calls[-1])
    return calls


def test_fused_validate_and_predict_match_eager(seg_run, monkeypatch) -> None:
    folder, checkpoint = seg_run
    monkeypatch.chdir(folder)
    common = ["--config", SEG_CONFIG, *SEG_DATA, *QUIET, "--ckpt_path", str(checkpoint),
              "--data.init_args.predict_images", "data/shapes_voc/VOCdevkit/VOC2012/JPEGImages"]
    folds = _folds(monkeypatch)
    eager = cli_main(["validate", *common]).trainer.callback_metrics
    assert not folds
    fused = cli_main(["validate", *common, "--model.init_args.inference", "fused"])
    assert len(folds) == 1 and fuse.count_batchnorms(folds[0]) == 0
    assert float(fused.trainer.callback_metrics["val/miou"]) == pytest.approx(float(eager["val/miou"]), abs=1e-6)

    masks = {}
    predictions = folder / "runs" / "deeplabv3lite_shapes_demo" / "predictions" / "masks"
    for name in ("eager", "fused"):
        cli_main(["predict", *common, "--model.init_args.inference", name])
        masks[name] = {p.name: np.asarray(Image.open(p)) for p in sorted(predictions.glob("*.png"))}
    assert masks["eager"] and masks["eager"].keys() == masks["fused"].keys()
    assert all(np.array_equal(masks["eager"][k], masks["fused"][k]) for k in masks["eager"])


def test_fit_validates_the_training_network(seg_run, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    folds = _folds(monkeypatch)
    cli_main(["fit", "--config", SEG_CONFIG, *SEG_DATA, *QUIET, "--model.init_args.backbone.width_mult", "0.35",
              "--model.init_args.inference", "fused", "--trainer.max_steps", "1"])
    assert not folds  # the weights change every step: fit's validation runs self.model


def test_inference_must_be_known(capsys) -> None:
    message = "inference must be 'eager', 'fused', 'compiled' or an exported .onnx / .pte / .tflite file, got 'fast'"
    with pytest.raises(ValueError, match=message):
        cli_main(["--config", SEG_CONFIG, *SEG_DATA, "--model.init_args.inference", "fast"], run=False)
    with pytest.raises(ValueError, match=message):
        SegmentationTask(num_classes=5, backbone=BackboneSettings(width_mult=0.35),
                         inference="fast")  # built from Python, no CLI


def test_compiled_runs_the_checked_fold(det_run, shapes_coco: Path, monkeypatch) -> None:
    """``inference: compiled`` checks the fold on the first batch and compiles it; torch.compile is stubbed to the
    folded module here (inductor's own build is tested in test_fuse.py): this is the wiring."""
    folder, checkpoint = det_run
    monkeypatch.chdir(folder)
    checks, compiled, modules = [], [], []
    check = fuse.assert_no_batchnorm
    monkeypatch.setattr(fuse, "assert_no_batchnorm", lambda *a: checks.append(1) or check(*a))
    monkeypatch.setattr(torch, "compile",
                        lambda module, **options: compiled.append(options) or modules.append(module) or module)
    common = ["validate", "--config", DET_CONFIG, *det_data(shapes_coco), *DET_POST, *QUIET,
              "--ckpt_path", str(checkpoint)]
    eager = cli_main(common).trainer.callback_metrics
    run = cli_main([*common, "--model.init_args.inference", "compiled"])
    assert checks == [1] and compiled == [{"backend": "inductor", "options": {"freezing": True}}]
    assert len(modules) == 1 and fuse.count_batchnorms(modules[0]) == 0
    for key in ("val/map", "val/map_50", "val/mar_100"):
        assert float(run.trainer.callback_metrics[key]) == pytest.approx(float(eager[key]), abs=1e-4)
