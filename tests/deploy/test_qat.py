"""Quantisation-aware training through the CLI: ``fit`` with a ``qat`` block from a float checkpoint, then
``export.py --int8`` of the QAT checkpoint (converted, not calibrated) with parity, ``validate`` and
``load_from_checkpoint`` of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.commands.export import export
from mobilenetv2_dense.datasets.images import IMAGENET_MEAN as MEAN
from mobilenetv2_dense.datasets.images import IMAGENET_STD as STD
from mobilenetv2_dense.deploy.qat import FakeQuantizedNetwork
from mobilenetv2_dense.deploy.runtime import DeployedModel, read_sidecar
from mobilenetv2_dense.models import checkpoint_state_dict
from mobilenetv2_dense.tasks.detection import DetectionTask
from mobilenetv2_dense.tasks.segmentation import SegmentationTask
from tests.deploy.runs import DET_CONFIG, QUIET, SEG_CONFIG, SEG_DATA, det_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _qat_fit(folder: Path, config: str, start: Path, options: list[str], steps: int = 2) -> Path:
    """``fit`` with ``qat.weights`` = the float checkpoint ``start``; returns the QAT run's last checkpoint."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli_main(["fit", "--config", config, *options, *QUIET, "--model.init_args.backbone.width_mult", "0.35",
                  "--model.init_args.qat.weights", str(start), "--model.init_args.qat.freeze_batchnorm_epoch", "0",
                  "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0"])
    return next(folder.rglob("last.ckpt"))


@pytest.fixture(scope="module")
def det_qat(det_run: tuple[Path, Path], shapes_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 4-step SSDLite run, then 2 QAT steps with its BatchNorm statistics frozen from the start."""
    _, start = det_run
    folder = tmp_path_factory.mktemp("det_qat")
    return _qat_fit(folder, DET_CONFIG, start, [*det_data(shapes_coco), "--model.init_args.num_classes", "4"])


def test_qat_checkpoint_keeps_float_weights_and_fake_quantisers(det_run, det_qat: Path) -> None:
    _, start = det_run
    checkpoint = torch.load(det_qat, map_location="cpu", weights_only=True)
    assert checkpoint["qat"] == {"image_size": [96, 96]}
    fake_quant = [k for k in checkpoint["state_dict"] if k.startswith("qat_network.") and ".scale" in k]
    assert len(fake_quant) > 50  # activations and per-channel weights
    # The float weights are under the usual keys (they load as a float model) and trained away from the start.
    before, after = checkpoint_state_dict(start), checkpoint_state_dict(det_qat)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    # Loading it rebuilds the fake-quantised network, whose state loads strictly.
    task = DetectionTask.load_from_checkpoint(det_qat, map_location="cpu")
    assert isinstance(task.qat_network, FakeQuantizedNetwork) and task.qat_network.image_size == (96, 96)
    task.eval()
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        fake = task.run_network(images)["cls_logits"]
        real = task.model(images)["cls_logits"]
    assert fake.shape == real.shape and 0 < (fake - real).abs().max() < 0.5 * real.abs().max()


def test_qat_detector_exports_to_executorch_int8_with_parity(det_qat: Path, shapes_coco: Path) -> None:
    folder = det_qat.parents[5]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        path = export(["--config", DET_CONFIG, "--ckpt_path", str(det_qat), *det_data(shapes_coco), "--format",
                       "executorch", "--int8", "--parity_images", "4", "--output", str(folder / "export" / "qat.pte"),
                       # Few candidates keep the unrolled NMS quick to lower; parity is about the figures.
                       "--model.init_args.post_processing.topk_candidates", "8",
                       "--model.init_args.post_processing.detections_per_img", "4"])
    meta = read_sidecar(path)
    assert meta["int8"]["method"].startswith("PT2E quantisation-aware training")
    assert "calibration_images" not in meta["int8"]
    assert meta["int8"]["int8_layers"] == meta["int8"]["float_layers"]  # every convolution converted
    # Parity as for any int8 file: against the float weights (here they detect next to nothing after 6 steps).
    parity = meta["parity"]
    assert parity["images"] == 4 and 0 <= parity["deployed"]["map"] <= 1


def test_segmentation_qat_validates_and_exports_qdq_onnx(seg_run, tmp_path: Path) -> None:
    """DeepLabv3-lite: QAT from the float run; ``validate`` of the QAT checkpoint runs its fake-quantised network;
    its int8 ONNX file is QDQ, keeps dynamic H and W, and computes the trained network at a size it was not traced
    at."""
    _, start = seg_run
    checkpoint = _qat_fit(tmp_path, SEG_CONFIG, start, SEG_DATA)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        cli = cli_main(["validate", "--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), *SEG_DATA, *QUIET])
        path = export(["--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), *SEG_DATA, "--format", "onnx",
                       "--int8", "--parity_images", "3", "--output", str(tmp_path / "seg_qat.onnx")])
    assert isinstance(cli.model.qat_network, FakeQuantizedNetwork)
    assert 0 <= cli.trainer.callback_metrics["val/miou"] <= 1
    meta = read_sidecar(path)
    assert meta["dynamic_size"] and meta["int8"]["int8_layers"] == meta["int8"]["float_layers"]
    assert meta["parity"]["images"] == 3
    import onnx

    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    task = SegmentationTask.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    assert isinstance(task.qat_network, FakeQuantizedNetwork)
    images = torch.rand(2, 3, 40, 56)
    normalised = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        fake = task.run_network(normalised)["out"]
        real = task.model(normalised)["out"]
    deployed = DeployedModel(path)(images)["logits"]
    assert deployed.shape == fake.shape == (2, 5, 40, 56)
    # int8 rounding apart, the file is the fake-quantised network, not the float one
    assert (deployed - fake).abs().max() < 0.25 * (real - fake).abs().max() + 1e-3
