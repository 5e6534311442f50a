"""The joint model through the export command: one ONNX graph with the detector's fixed-shape post-processing and
the segmentation logits, its sidecar, parity figures for both tasks, and validate on the exported file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.commands.export import export
from mobilenetv2_dense.deploy.runtime import DeployedModel, read_sidecar
from mobilenetv2_dense.tasks.detection import DetectionTask
from tests.conftest import JOINT_CONFIG, JOINT_POST, joint_options

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def joint_onnx(joint_run, shapes_coco: Path) -> Path:
    """The joint run exported to ONNX (30 candidates, 10 detections), parity figures on its 8 val images."""
    folder, checkpoint = joint_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors (see one_thread, which a module fixture runs before)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            return export(["--config", JOINT_CONFIG, "--ckpt_path", str(checkpoint), "--format", "onnx",
                           "--output", str(folder / "export" / "joint.onnx"), "--data.init_args.root",
                           str(shapes_coco), "--data.init_args.image_size", "64", "--data.init_args.num_workers",
                           "0", "--data.init_args.val_batch_size", "4", *JOINT_POST])
    finally:
        torch.set_num_threads(threads)


def test_joint_onnx_contract_and_parity_of_both_tasks(joint_onnx: Path) -> None:
    meta = read_sidecar(joint_onnx)
    assert meta["task"] == "joint" and meta["input"]["image_size"] == [64, 64]
    assert [o["name"] for o in meta["outputs"]] == ["boxes", "scores", "labels", "num_detections", "seg_logits"]
    assert [c["id"] for c in meta["classes"]] == [1, 3, 7, 9]  # the dataset's gapped category ids
    assert [c["name"] for c in meta["seg_classes"]] == ["background", "circle", "square", "triangle", "cross"]
    detection, segmentation = meta["parity"]["detection"], meta["parity"]["segmentation"]
    assert detection["images"] == segmentation["images"] == 8 and detection["detections"] > 8 * 5
    assert detection["images_with_other_count"] == 0 and detection["images_with_other_labels"] == 0
    assert detection["max_box_diff_px"] <= 1e-3 and detection["max_score_diff"] <= 1e-5
    assert round(detection["deployed"]["map"], 3) == round(detection["eager"]["map"], 3)
    assert segmentation["pixels"] == 8 * 64 * 64 and segmentation["pixels_with_other_label"] == 0
    assert segmentation["max_logit_diff"] < 1e-3 and segmentation["deployed"] == segmentation["eager"]

    model = DeployedModel(joint_onnx)
    out = model(torch.rand(3, 3, 64, 64))  # another batch size than the export's example (2)
    assert out["boxes"].shape == (3, 10, 4) and out["seg_logits"].shape == (3, 5, 64, 64)
    detections = model.detections_from(out)
    assert all(set(d["labels"].tolist()) <= {1, 2, 3, 4} for d in detections)  # category ids mapped back to labels


def test_validate_runs_the_exported_joint_model(joint_onnx: Path, joint_run, shapes_coco: Path, monkeypatch) -> None:
    """``validate`` on the ONNX file scores what the export's parity figures give the eager model on the same 8 val
    images (tests/tasks/test_joint_task.py checks the checkpoint's validate against a computation by hand)."""
    folder, checkpoint = joint_run
    monkeypatch.chdir(folder)
    deployed = cli_main(["validate", *joint_options(shapes_coco), "--ckpt_path", str(checkpoint),
                         "--model.init_args.inference", str(joint_onnx)]).trainer.callback_metrics
    assert "val/detection_loss" not in deployed  # the graph gives detections, not the raw outputs of the loss
    eager = read_sidecar(joint_onnx)["parity"]
    assert float(deployed["val/map"]) == pytest.approx(eager["detection"]["eager"]["map"], abs=1e-4)
    assert float(deployed["val/map_50"]) == pytest.approx(eager["detection"]["eager"]["map_50"], abs=1e-4)
    assert 100 * float(deployed["val/miou"]) == pytest.approx(eager["segmentation"]["eager"]["miou"], abs=1e-3)
    assert 100 * float(deployed["val/pixel_accuracy"]) == pytest.approx(
        eager["segmentation"]["eager"]["pixel_accuracy"], abs=1e-3)
    # A detection task is not handed the joint file (nor a joint task a detector's).
    with pytest.raises(ValueError, match="is a joint model of 4 classes, this task a detection of 4"):
        DetectionTask(num_classes=4, backbone=BackboneSettings(width_mult=0.35, init="normal"),
                      inference=str(joint_onnx)).backend()
