"""``export.py --int8``: post-training int8 through both formats, with the network quantised and the
normalisation and post-processing left in float, and the parity figures written as for float files."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from mobilenetv2_dense.commands.export import export
from mobilenetv2_dense.deploy.runtime import DeployedModel, read_sidecar
from tests.deploy.runs import CLS_CONFIG, CLS_DATA, DET_CONFIG, SEG_CONFIG, SEG_DATA, det_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _export(seg_run, *options: str) -> Path:
    folder, checkpoint = seg_run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return export(["--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), *SEG_DATA, *options])


def test_onnx_int8_quantises_the_convolutions_only(seg_run, seg_onnx: Path) -> None:
    folder, _ = seg_run
    fp32 = seg_onnx
    # Traced at another size than the data's 48 crops (and than the float file's): H and W stay dynamic.
    int8 = _export(seg_run, "--int8", "--calibration", "6", "--image_size", "56", "40", "--output",
                   str(folder / "export" / "int8.onnx"))
    meta = read_sidecar(int8)
    assert meta["input"]["image_size"] == [56, 40]
    assert meta["int8"]["calibration_images"] == 6 and meta["int8"]["quantised_ops"][:3] == ["Conv", "Gemm", "MatMul"]
    assert meta["int8"]["int8_layers"] == meta["int8"]["float_layers"] > 40  # every convolution
    assert not (folder / "export" / "int8.fp32.onnx").exists()
    graph = onnx.load(str(int8)).graph
    quantised = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert convs and all(node.input[1] in {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
                         for node in convs)  # every conv weight comes through int8
    assert quantised and int8.stat().st_size < 0.5 * fp32.stat().st_size  # int8 weights: about a quarter
    parity = meta["parity"]
    assert parity["images"] == 3 and "miou" in parity["deployed"]
    logits = DeployedModel(int8)(torch.rand(1, 3, 48, 64))["logits"]
    reference = DeployedModel(fp32)(torch.rand(1, 3, 48, 64))["logits"]
    assert logits.shape == reference.shape == (1, 5, 48, 64)


def test_onnx_int8_detector_at_another_size_than_the_data(det_run, shapes_coco: Path) -> None:
    """A detector trained at 96 exported at 64 (its anchors fixed there): calibration and parity read the data at
    64, not at the config's size, which the file would refuse."""
    folder, checkpoint = det_run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        path = export(["--config", DET_CONFIG, "--ckpt_path", str(checkpoint), *det_data(shapes_coco), "--int8",
                       "--calibration", "4", "--image_size", "64", "64",
                       "--output", str(folder / "export" / "det8.onnx"),
                       # Few candidates keep the unrolled NMS quick to export; parity is about the figures.
                       "--model.init_args.post_processing.topk_candidates", "8",
                       "--model.init_args.post_processing.detections_per_img", "4"])
    meta = read_sidecar(path)
    assert meta["input"]["image_size"] == [64, 64] and meta["int8"]["calibration_images"] == 4
    parity = meta["parity"]
    assert parity["images"] == 8 and parity["detections"] == parity["deployed_detections"] == 8 * 4
    assert 0 < parity["matched_detections"] <= 8 * 4
    assert 0.0 <= parity["max_box_diff_px"] < 64 and 0.0 <= parity["max_score_diff"] < 1  # measured on pairs
    assert set(parity["deployed"]) == {"map", "map_50", "map_75", "mar_100"}
    assert DeployedModel(path)(torch.rand(2, 3, 64, 64))["boxes"].shape == (2, 4, 4)


def test_executorch_int8_classifier(cls_run) -> None:
    """PT2E int8 lowered to XNNPACK (the classifier: the quickest network to lower)."""
    folder, checkpoint = cls_run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        path = export(["--config", CLS_CONFIG, "--ckpt_path", str(checkpoint), *CLS_DATA, "--format", "executorch",
                       "--int8", "--calibration", "8", "--output", str(folder / "export" / "int8.pte")])
    meta = read_sidecar(path)
    assert meta["int8"]["calibration_images"] == 8
    assert meta["int8"]["int8_layers"] == meta["int8"]["float_layers"] == 53  # 52 convolutions and the classifier
    assert meta["parity"]["images"] > 0 and "acc1" in meta["parity"]["deployed"]
    assert meta["input"]["shape"] == [1, 3, 64, 64] and not meta["dynamic_size"]  # an ExecuTorch file is static
    model = DeployedModel(path)
    assert model(torch.rand(2, 3, 64, 64))["logits"].shape == (2, 4)  # image by image
    with pytest.raises(ValueError, match="--image_size"):
        model(torch.rand(1, 3, 80, 72))
