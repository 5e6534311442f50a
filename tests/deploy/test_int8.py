"""``export.py --int8``: post-training int8 through both formats, with the network quantised and the
normalisation and post-processing left in float, and the parity figures written as for float files."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from mobilenetv2_dense.commands.export import export
from mobilenetv2_dense.deploy.runtime import DeployedModel, read_sidecar
from tests.deploy.runs import CLS_CONFIG, CLS_DATA, SEG_CONFIG, SEG_DATA

pytestmark = pytest.mark.usefixtures("one_thread")


def _export(seg_run, *options: str) -> Path:
    folder, checkpoint = seg_run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        return export(["--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), *SEG_DATA, *options])


def test_onnx_int8_quantises_the_convolutions_only(seg_run, seg_onnx: Path) -> None:
    folder, _ = seg_run
    fp32 = seg_onnx
    int8 = _export(seg_run, "--int8", "--calibration", "6", "--output", str(folder / "export" / "int8.onnx"))
    meta = read_sidecar(int8)
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
    model = DeployedModel(path)
    for shape in ((2, 3, 64, 64), (1, 3, 80, 72)):  # H and W are dynamic in ExecuTorch too
        assert model(torch.rand(*shape))["logits"].shape == (shape[0], 4)
