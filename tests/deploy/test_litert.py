"""LiteRT ``.tflite``: ``export.py --format litert`` (``deploy/litert.py``) on the trained runs, float and int8, the
files run in the LiteRT interpreter against the eager model with the export's parity figures, held to the ONNX
tests' tolerances; the contract says the input is static ``(1, 3, H, W)``.

litert-torch is optional (``pip install -e .[litert]``): the conversion tests skip where it is not installed, and
the error that names the extra is tested there instead. Each conversion takes a minute or so, hence ``slow``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mobilenetv2_dense.__main__ import main
from mobilenetv2_dense.commands.export import export
from mobilenetv2_dense.datasets.images import IMAGENET_MEAN, IMAGENET_STD
from mobilenetv2_dense.deploy.graph import DetectorGraph, SegmenterGraph
from mobilenetv2_dense.deploy.litert import LiteRTDeployedModel, convertible, quantize_litert, write_litert
from mobilenetv2_dense.deploy.runtime import DeployedModel, read_sidecar
from mobilenetv2_dense.models import deeplabv3_mobilenet_v2, ssdlite320_mobilenet_v2
from tests.conftest import JOINT_CONFIG, JOINT_POST, joint_options
from tests.deploy.runs import CLS_CONFIG, CLS_DATA, DET_CONFIG, DET_POST, SEG_CONFIG, SEG_DATA, det_data

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_LITERT = importlib.util.find_spec("litert_torch") is not None
requires_litert = pytest.mark.skipif(not HAS_LITERT, reason="litert-torch is not installed (optional: "
                                     "pip install -e .[litert])")
INSTALL = r"pip install -e \.\[litert\]"


def _export(run: tuple[Path, Path], config: str, options: list[str], name: str, *flags: str) -> Path:
    """``export.py --format litert`` of ``run``'s checkpoint as ``export/<name>`` in the run's folder."""
    folder, checkpoint = run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return export(["--config", config, "--ckpt_path", str(checkpoint), "--format", "litert", *options,
                       "--output", str(folder / "export" / name), *flags])


def _check_static_contract(meta: dict, size: tuple[int, int]) -> None:
    assert meta["format"] == "litert" and meta["file"].endswith(".tflite")
    assert meta["input"]["shape"] == [1, 3, *size] and meta["input"]["image_size"] == list(size)
    assert meta["dynamic_size"] is False and "size_range" not in meta["input"]
    assert {"litert_torch", "ai_edge_litert", "torch"} <= set(meta["versions"])


def test_convertible_graph_computes_the_same() -> None:
    """The converter's copy broadcasts DeepLabv3's image pooling by a resize: the same logits, the graph untouched."""
    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v2(num_classes=3, head="lite", width_mult=0.35).eval()
    graph = SegmenterGraph(model, mean=IMAGENET_MEAN, std=IMAGENET_STD).eval()
    images = torch.rand(2, 3, 48, 72)
    copy = convertible(graph)
    assert type(graph.network.model.head.pooling).__name__ == "ImagePooling"
    assert type(copy.network.model.head.pooling).__name__ == "_BroadcastPooling"
    with torch.no_grad():
        assert torch.equal(copy(images), graph(images))


@pytest.mark.skipif(HAS_LITERT, reason="litert-torch is installed")
def test_missing_litert_names_the_install(tmp_path: Path) -> None:
    """Without litert-torch, ``export.py --format litert`` stops before building anything, and opening or writing a
    ``.tflite`` says the same: which extra to install."""
    with pytest.raises(ImportError, match=f"needs litert-torch and ai-edge-litert.*{INSTALL}"):
        export(["--config", SEG_CONFIG, "--format", "litert", "--output", str(tmp_path / "seg.tflite")])
    assert not list(tmp_path.iterdir())
    with pytest.raises(ImportError, match=INSTALL):
        DeployedModel(tmp_path / "seg.tflite")
    with pytest.raises(ImportError, match=INSTALL):
        write_litert(torch.nn.Identity(), torch.rand(1, 3, 8, 8), tmp_path / "m.tflite", output_names=["x"])


@pytest.mark.slow
@requires_litert
def test_detection_float_and_int8(det_run, shapes_coco: Path) -> None:
    """The detector at the data's 96 px: float as ONNX is held (test_export.py: the same detections, boxes within
    1e-3 px, scores within 1e-5, the same mAP); int8 every convolution quantised, the file a third the size, its
    figures measured on paired detections."""
    options = [*det_data(shapes_coco), *DET_POST]
    fp32 = _export(det_run, DET_CONFIG, options, "det.tflite")
    meta = read_sidecar(fp32)
    _check_static_contract(meta, (96, 96))
    assert "int8" not in meta and [c["id"] for c in meta["classes"]] == [1, 3, 7, 9]
    parity = meta["parity"]
    assert parity["images"] == 8 and parity["detections"] > 8 * 5
    assert parity["images_with_other_count"] == 0 and parity["images_with_other_labels"] == 0
    assert parity["matched_detections"] == parity["detections"]
    assert parity["max_box_diff_px"] <= 1e-3 and parity["max_score_diff"] <= 1e-5
    for key in ("map", "map_50", "mar_100"):
        assert round(parity["deployed"][key], 3) == round(parity["eager"][key], 3)
    model = DeployedModel(fp32)  # the suffix picks LiteRT's runtime
    assert isinstance(model, LiteRTDeployedModel) and model.fixed_size == (96, 96)
    out = model(torch.rand(2, 3, 96, 96))
    assert out["boxes"].shape == (2, 15, 4) and out["labels"].dtype == torch.int64
    assert set(out["labels"][out["labels"] > 0].tolist()) <= {1, 3, 7, 9}

    int8 = _export(det_run, DET_CONFIG, options, "det.int8.tflite", "--int8", "--calibration", "8")
    meta = read_sidecar(int8)
    _check_static_contract(meta, (96, 96))
    assert meta["int8"]["calibration_images"] == 8 and "litert-torch" in meta["int8"]["method"]
    assert meta["int8"]["int8_layers"] == meta["int8"]["float_layers"] > 40  # every convolution
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size
    parity = meta["parity"]
    assert parity["images"] == 8 and 0 < parity["matched_detections"] <= parity["detections"]
    assert 0.0 <= parity["max_box_diff_px"] < 96 and 0.0 <= parity["max_score_diff"] < 1  # measured on pairs
    assert set(parity["deployed"]) == {"map", "map_50", "map_75", "mar_100"}


@pytest.mark.slow
@requires_litert
def test_segmentation_float_and_int8_at_the_files_size(seg_run) -> None:
    """The segmenter exported at 40 x 56 is fixed there (dynamic in ONNX and ExecuTorch): parity feeds both sides
    the 48 x 64 validation images resized to it, with ONNX's tolerances (test_export.py); int8 quantises every
    convolution and gives its logits back as floats."""
    fp32 = _export(seg_run, SEG_CONFIG, SEG_DATA, "seg.tflite", "--image_size", "40", "56")
    meta = read_sidecar(fp32)
    _check_static_contract(meta, (40, 56))
    parity = meta["parity"]
    assert parity["images"] == 3 and parity["pixels"] == 3 * 40 * 56 and parity["pixels_with_other_label"] == 0
    assert parity["max_logit_diff"] < 1e-3 and parity["deployed"] == parity["eager"]
    model = DeployedModel(fp32)
    assert model(torch.rand(2, 3, 40, 56))["logits"].shape == (2, 5, 40, 56)
    with pytest.raises(ValueError, match="--image_size"):
        model(torch.rand(1, 3, 48, 64))

    int8 = _export(seg_run, SEG_CONFIG, SEG_DATA, "seg.int8.tflite", "--image_size", "40", "56", "--int8",
                   "--calibration", "6")
    meta = read_sidecar(int8)
    _check_static_contract(meta, (40, 56))
    assert meta["int8"]["calibration_images"] == 6
    assert meta["int8"]["int8_layers"] == meta["int8"]["float_layers"] > 40
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    assert meta["parity"]["images"] == 3 and "miou" in meta["parity"]["deployed"]
    logits = DeployedModel(int8)(torch.rand(1, 3, 40, 56))["logits"]
    assert logits.dtype == torch.float32 and logits.shape == (1, 5, 40, 56)


@pytest.mark.slow
@requires_litert
def test_joint_float_matches_eager(joint_run, shapes_coco: Path) -> None:
    """The joint graph (detector post-processing with the unrolled NMS, segmentation with image pooling): the same
    detections and label maps as eager on the 8 val images, as the ONNX file gives (test_joint_export.py)."""
    options = joint_options(shapes_coco)[2:]  # without --config
    path = _export(joint_run, JOINT_CONFIG, [*options, *JOINT_POST], "joint.tflite")
    meta = read_sidecar(path)
    _check_static_contract(meta, (64, 64))
    detection, segmentation = meta["parity"]["detection"], meta["parity"]["segmentation"]
    assert detection["images"] == segmentation["images"] == 8 and detection["detections"] > 8 * 5
    assert detection["images_with_other_count"] == 0 and detection["images_with_other_labels"] == 0
    assert detection["matched_detections"] == detection["detections"]
    assert detection["max_box_diff_px"] <= 1e-3 and detection["max_score_diff"] <= 1e-5
    assert detection["deployed"] == detection["eager"]
    assert segmentation["pixels_with_other_label"] == 0 and segmentation["max_logit_diff"] < 1e-3
    assert segmentation["deployed"] == segmentation["eager"]

    model = DeployedModel(path)
    assert model.input_shape == (1, 3, 64, 64) and model.fixed_size == (64, 64)
    out = model(torch.rand(3, 3, 64, 64))  # three images through the one-image file
    assert out["boxes"].shape == (3, 10, 4) and out["seg_logits"].shape == (3, 5, 64, 64)
    assert out["labels"].dtype == out["num_detections"].dtype == torch.int64  # the contract's, not int32
    with pytest.raises(ValueError, match="--image_size"):
        model(torch.rand(1, 3, 64, 96))


@pytest.mark.slow
@requires_litert
def test_classifier_int8_quantises_the_network(cls_run) -> None:
    """PT2E int8: every convolution and the classifier int8 in the file, logits read back as floats (the file leaves
    the last layer's output int8), top-1 as the eager model's on most images."""
    int8 = _export(cls_run, CLS_CONFIG, CLS_DATA, "cls.int8.tflite", "--int8", "--calibration", "8")
    meta = read_sidecar(int8)
    _check_static_contract(meta, (64, 64))
    assert meta["int8"]["int8_layers"] == meta["int8"]["float_layers"] == 53  # 52 convolutions, the classifier
    figures = meta["parity"]
    assert figures["images"] > 0 and figures["images_with_other_class"] <= figures["images"] // 4
    logits = DeployedModel(int8)(torch.rand(2, 3, 64, 64))["logits"]
    assert logits.dtype == torch.float32 and logits.shape == (2, 4)


@pytest.mark.slow
@requires_litert
def test_benchmark_command_times_the_litert_file(seg_run, capsys) -> None:
    """``mobilenetv2-dense benchmark --formats onnx litert``: a LiteRT row beside ONNX's, its metric from its own
    parity run (the images resized to its size) and its delta against the eager model on those images."""
    folder, checkpoint = seg_run
    out = folder / "bench"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(["benchmark", "--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), "--output_dir", str(out),
              "--formats", "onnx", "litert", "--image_size", "40", "56", "--runs", "2", "--warmup", "1", *SEG_DATA])
    report = json.loads((out / "benchmark.json").read_text())
    assert [row["format"] for row in report["rows"]] == ["pytorch (eager)", "onnx fp32", "litert fp32"]
    _, onnx, litert = report["rows"]
    assert Path(litert["file"]).suffix == ".tflite" and litert["ms"] > 0
    parity = read_sidecar(litert["file"])["parity"]
    assert litert["metrics"] == {"mIoU": parity["deployed"]["miou"]}
    assert litert["delta"]["mIoU"] == pytest.approx(parity["deployed"]["miou"] - parity["eager"]["miou"])
    assert abs(litert["delta"]["mIoU"]) <= 1e-3 and abs(onnx["delta"]["mIoU"]) <= 1e-3
    assert any(line.startswith("litert fp32 ") for line in capsys.readouterr().out.splitlines())


@requires_litert
def test_int8_network_quantises_the_level_concatenations() -> None:
    """The detector head's outputs, concatenated over its levels, get a scale of their own: a concatenation left
    float took the first level's scale in the converter and clipped the others (mAP 0.30 -> 0.13 on the demo)."""
    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.35).eval()
    graph = DetectorGraph(model, (96, 96), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    quantised, _ = quantize_litert(convertible(graph), torch.rand(1, 3, 96, 96), [torch.rand(2, 3, 96, 96)])
    cats = [node for node in quantised.network.graph.nodes if node.target == torch.ops.aten.cat.default]
    assert len(cats) == 2  # bbox_regression and cls_logits
    assert all("quantize_per_tensor" in str(user.target) for node in cats for user in node.users)
