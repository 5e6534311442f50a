"""LiteRT ``.tflite`` (``deploy/litert.py``): the export command's graphs of trained runs converted by litert-torch,
float and int8, run in the LiteRT interpreter against the eager model with the export's parity figures.

litert-torch is optional (its xdsl 0.28 needs typing-extensions < 4.13, selenium 4.45 >= 4.15): the conversion
tests skip where it is not installed; each converts for a minute or two, hence ``slow``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mobilenetv2_dense.commands.export import build_graph, build_task, calibration_batches, data_at_size, label_set
from mobilenetv2_dense.commands.parity import parity
from mobilenetv2_dense.datasets.images import IMAGENET_MEAN, IMAGENET_STD
from mobilenetv2_dense.deploy.graph import DetectorGraph, SegmenterGraph
from mobilenetv2_dense.deploy.litert import (
    LiteRTDeployedModel,
    convertible,
    count_int8_weights,
    litert_versions,
    quantize_litert,
    static_contract,
    write_litert,
)
from mobilenetv2_dense.deploy.runtime import write_sidecar
from mobilenetv2_dense.models import deeplabv3_mobilenet_v2, ssdlite320_mobilenet_v2
from tests.conftest import JOINT_CONFIG, JOINT_POST, joint_options
from tests.deploy.runs import CLS_CONFIG, CLS_DATA

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_LITERT = importlib.util.find_spec("litert_torch") is not None
requires_litert = pytest.mark.skipif(not HAS_LITERT, reason="litert-torch is not installed (optional: pip install "
                                     "litert-torch==0.10.0, see deploy/litert.py)")


def _export(folder: Path, config: str, checkpoint: Path, options: list[str], name: str, *, int8: bool = False):
    """What ``export.py --format litert`` does: the task's graph written as ``name``, its sidecar, and the parity
    figures of the file against the eager model; returns (file, its runner, the parity figures)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        task, datamodule, extras = build_task(config, str(checkpoint), options)
        graph, example, contract = build_graph(task, datamodule, label_set(task, datamodule, extras),
                                               image_size=None, argmax=False)
        contract = static_contract(contract)
        size = tuple(contract["input"]["image_size"])
        data_at_size(datamodule, size)
        calibration = calibration_batches(datamodule, 8, size) if int8 else None
        path, seconds = write_litert(graph, example, folder / "export" / name, int8=int8, calibration=calibration,
                                     output_names=[o["name"] for o in contract["outputs"]])
        write_sidecar(path, {**contract, "format": "litert", "versions": litert_versions(),
                             "export_seconds": round(seconds, 1)})
        model = LiteRTDeployedModel(path)
        return path, model, parity(task, model, datamodule, max_images=8)


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
    with pytest.raises(ImportError, match="pip install litert-torch"):
        write_litert(torch.nn.Identity(), torch.rand(1, 3, 8, 8), tmp_path / "m.tflite", output_names=["x"])


@pytest.mark.slow
@requires_litert
def test_joint_float_matches_eager(joint_run, shapes_coco: Path) -> None:
    """The joint graph (detector post-processing with the unrolled NMS, segmentation with image pooling): the same
    detections and label maps as eager on the 8 val images, as the ONNX file gives (test_joint_export.py)."""
    folder, checkpoint = joint_run
    options = joint_options(shapes_coco)[2:]  # without --config
    path, model, figures = _export(folder, JOINT_CONFIG, checkpoint, [*options, *JOINT_POST], "joint.tflite")
    assert model.input_shape == (1, 3, 64, 64) and model.fixed_size == (64, 64)
    detection, segmentation = figures["detection"], figures["segmentation"]
    assert detection["images"] == segmentation["images"] == 8 and detection["detections"] > 8 * 5
    assert detection["images_with_other_count"] == 0 and detection["images_with_other_labels"] == 0
    assert detection["matched_detections"] == detection["detections"]
    assert detection["max_box_diff_px"] <= 1e-3 and detection["max_score_diff"] <= 1e-5
    assert detection["deployed"] == detection["eager"]
    assert segmentation["pixels_with_other_label"] == 0 and segmentation["max_logit_diff"] < 1e-3
    assert segmentation["deployed"] == segmentation["eager"]

    out = model(torch.rand(3, 3, 64, 64))  # three images through the one-image file
    assert out["boxes"].shape == (3, 10, 4) and out["seg_logits"].shape == (3, 5, 64, 64)
    assert out["labels"].dtype == out["num_detections"].dtype == torch.int64  # the contract's, not int32
    with pytest.raises(ValueError, match="--image_size"):
        model(torch.rand(1, 3, 64, 96))


@pytest.mark.slow
@requires_litert
def test_classifier_int8_quantises_the_network(cls_run) -> None:
    """PT2E int8: every convolution and the classifier int8 in the file, a third of the float file's size, logits
    read back as floats (the file leaves the last layer's output int8), top-1 as the eager model's on most images."""
    folder, checkpoint = cls_run
    fp32, _, float_figures = _export(folder, CLS_CONFIG, checkpoint, CLS_DATA, "cls.tflite")
    int8, model, figures = _export(folder, CLS_CONFIG, checkpoint, CLS_DATA, "cls.int8.tflite", int8=True)
    assert float_figures["images_with_other_class"] == 0 and float_figures["max_logit_diff"] < 1e-4
    assert count_int8_weights(int8) == 53 and count_int8_weights(fp32) == 0  # 52 convolutions, the classifier
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size
    logits = model(torch.rand(2, 3, 64, 64))["logits"]
    assert logits.dtype == torch.float32 and logits.shape == (2, 4)
    assert figures["images"] > 0 and figures["images_with_other_class"] <= figures["images"] // 4



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
