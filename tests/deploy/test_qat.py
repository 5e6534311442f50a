"""Quantisation-aware training through the CLI: ``fit`` with a ``qat`` block from a float checkpoint, then
``export.py --int8`` of the QAT checkpoint (converted, not calibrated) with parity, ``validate`` and
``load_from_checkpoint`` of it."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.commands.export import export
from mobilenetv2_dense.deploy.qat import FakeQuantizedNetwork
from mobilenetv2_dense.deploy.runtime import read_sidecar
from mobilenetv2_dense.models import checkpoint_state_dict
from mobilenetv2_dense.tasks.detection import DetectionTask
from tests.deploy.runs import DET_CONFIG, QUIET, SEG_CONFIG, SEG_DATA, det_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _qat_fit(folder: Path, config: str, start: Path, options: list[str], steps: int = 2) -> Path:
    """``fit`` with ``qat.weights`` = the float checkpoint ``start``; returns the QAT run's last checkpoint."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli_main(["fit", "--config", config, *QUIET, "--model.init_args.backbone.width_mult", "0.35",
                  "--model.init_args.qat.weights", str(start), "--model.init_args.qat.freeze_batchnorm_epoch", "0",
                  "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0", *options])
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


def test_qat_detector_exports_a_qdq_onnx_file_with_parity(det_qat: Path, shapes_coco: Path) -> None:
    """The QAT checkpoint's int8 ONNX file. (ExecuTorch takes the same converted network: lowering it costs a minute
    here, as for the PTQ ExecuTorch test of tests/deploy/test_int8.py, and ``python -m benchmarks.qat`` runs it.)"""
    folder = det_qat.parents[5]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        path = export(["--config", DET_CONFIG, "--ckpt_path", str(det_qat), *det_data(shapes_coco), "--format",
                       "onnx", "--int8", "--parity_images", "4", "--output", str(folder / "export" / "qat.onnx"),
                       # Few candidates keep the unrolled NMS quick to export; parity is about the figures.
                       "--model.init_args.post_processing.topk_candidates", "8",
                       "--model.init_args.post_processing.detections_per_img", "4"])
    meta = read_sidecar(path)
    assert meta["int8"]["method"].startswith("PT2E quantisation-aware training")
    assert "calibration_images" not in meta["int8"]
    assert meta["int8"]["int8_layers"] == meta["int8"]["float_layers"]  # every convolution converted
    # Parity against the fake-quantised network the file was converted from: the same detections, int8 rounding
    # apart (the float weights of a 6-step run detect next to nothing, so mAP says little here).
    parity = meta["parity"]
    assert parity["images"] == 4 and parity["detections"] == parity["deployed_detections"] > 0
    assert parity["matched_detections"] > 0  # near-tied class scores of an untrained head may swap labels
    assert parity["max_box_diff_px"] < 0.5 and parity["max_score_diff"] < 0.01
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # a QDQ model


def test_segmentation_qat_trains_and_validates_fake_quantised(seg_run, tmp_path: Path) -> None:
    """DeepLabv3-lite: QAT from the float run, then ``validate`` of the QAT checkpoint through the CLI, which traces
    the network at set-up and loads the fake quantisers' state into it. (Its export is the detector's path above:
    the same restore, conversion and writers.)"""
    _, start = seg_run
    # A validation before training (Lightning's sanity check) and one between the epochs: Lightning gives the
    # modules their training flags back without train(), and the graph must still train its BatchNorms and ranges.
    validations = ["--trainer.num_sanity_val_steps", "1", "--trainer.limit_val_batches", "1",
                   "--model.init_args.qat.freeze_batchnorm_epoch", "null"]
    checkpoint = _qat_fit(tmp_path, SEG_CONFIG, start, [*SEG_DATA, *validations], steps=4)
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["qat"] == {"image_size": [48, 48]}
    before, after = checkpoint_state_dict(start), checkpoint_state_dict(checkpoint)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("running_mean"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        cli = cli_main(["validate", "--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), *SEG_DATA, *QUIET])
    network = cli.model.qat_network
    assert isinstance(network, FakeQuantizedNetwork) and network.dynamic_size  # any H, W, as the ONNX file's
    assert 0 <= cli.trainer.callback_metrics["val/miou"] <= 1
    # the fake quantisers validate with the ranges the checkpoint recorded, not fresh ones
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    scales = {k: v for k, v in saved.items() if k.startswith("qat_network.") and k.endswith(".scale")}
    loaded = cli.model.state_dict()
    assert scales and all(torch.equal(loaded[k], v) for k, v in scales.items())


def _activation_scales(converted: torch.nn.Module) -> list[float]:
    """The scale of each activation quantisation of a ``convert_pt2e`` network, in graph order."""
    return [float(node.args[1]) for node in converted.graph.nodes
            if node.op == "call_function" and str(node.target).endswith("quantize_per_tensor.default")
            and "dequantize" not in str(node.target)]


def test_qat_network_is_the_float_model_and_converts_to_the_ptq_model() -> None:
    """The fake-quantised network of a model with near-zero BatchNorm variances (as training leaves some channels),
    with fake quantisation off, computes the float model: its BatchNorms keep the model's eps (SSDLite's 1e-3),
    which torchao's QAT patterns replace by 1e-5. Calibrated on some images, it takes the activation ranges PTQ
    computes from the same weights and images, and converts to PTQ's int8 network. Training steps then move the
    weights' scales but not those ranges, and a reloaded state keeps them fixed."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from mobilenetv2_dense.deploy.formats import dynamic_shapes
    from mobilenetv2_dense.deploy.graph import Network
    from mobilenetv2_dense.models import deeplabv3_mobilenet_v2

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v2(num_classes=3, width_mult=0.35)
    model.train()(torch.randn(8, 3, 48, 48) * 2)  # BatchNorm statistics that are not the initial ones
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.eps, norm.momentum = 1e-3, 0.03  # TF's, as this project's SSDLite has them
    for norm in norms[::2]:
        norm.running_var[:2] = 1e-9  # near-dead channels: here eps decides the scale
    model.eval()
    images = [torch.randn(4, 3, 48, 48), torch.randn(2, 3, 48, 48) * 3]  # the second widens some ranges
    probe = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        program = torch.export.export(Network(model), (images[0],), dynamic_shapes=dynamic_shapes(True))
        ptq = prepare_pt2e(program.module(), XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True)))
        for batch in images:
            ptq(batch)
        ptq = convert_pt2e(ptq)
        float_out, ptq_out = model(probe)["out"], ptq(probe)

    network = FakeQuantizedNetwork(model, (48, 48), dynamic_size=True).eval()
    network.prepared.apply(disable_fake_quant)
    with torch.no_grad():
        torch.testing.assert_close(network(probe)["out"], float_out, rtol=0, atol=1e-4)
    network.prepared.apply(enable_fake_quant)
    assert network.calibrate(iter(images)) == 6 and bool(network.ranges_calibrated)
    converted = network.convert()
    assert _activation_scales(converted) == pytest.approx(_activation_scales(ptq), rel=1e-4)
    with torch.no_grad():  # the same int8 network, up to float rounding of the folded weights (a step here and there)
        torch.testing.assert_close(converted(probe), ptq_out, rtol=0, atol=4 * _activation_scales(ptq)[-1])
        assert (converted(probe) - ptq_out).abs().mean() < 0.01 * ptq_out.abs().mean()

    activations = {id(m) for m in network.activation_quantisers()}
    names = [f"prepared.{name}." for name, m in network.prepared.named_modules() if id(m) in activations]
    ranges = {k: v.clone() for k, v in network.state_dict().items()
              if k.startswith(tuple(names)) and k.endswith(("min_val", "max_val", "scale", "zero_point"))}
    weight_scales = {k: v.clone() for k, v in network.state_dict().items() if k.endswith(".scale") and v.numel() > 1}
    assert len(names) > 30 and weight_scales
    network.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        network(torch.randn(4, 3, 48, 48) * 5)["out"].square().mean().backward()
        optimizer.step()
    state = network.state_dict()
    # Fixed, though the batches were wider (a scale recomputed from its fixed min / max may differ in the last bit).
    assert [k for k, v in ranges.items() if not torch.allclose(state[k], v, rtol=1e-6, atol=0)] == []
    assert any(not torch.equal(state[k], v) for k, v in weight_scales.items())  # following the weights

    reloaded = FakeQuantizedNetwork(model, (48, 48), dynamic_size=True)
    reloaded.load_state_dict(state)
    reloaded.train()(torch.randn(4, 3, 48, 48) * 5)
    assert all(torch.allclose(reloaded.state_dict()[k], state[k], rtol=1e-6, atol=0) for k in ranges)
