"""The export command as a user runs it, and the exported files against the eager model (docs/export.md).

A detector and a segmenter are trained a few steps through the CLI on generated data in the real formats; each is
exported with ``export.py`` (in-process, and once through ``python export.py``) and run by ONNX Runtime and
ExecuTorch. The contract's shapes, the category ids, the parity figures the command writes, and the same files
from ``validate`` / ``predict`` on the exported model as on the checkpoint are checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_convert

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.commands.export import export
from mobilenetv2_dense.commands.parity import match_detections
from mobilenetv2_dense.deploy.runtime import DeployedModel, read_sidecar
from mobilenetv2_dense.heads.anchors import AnchorSettings
from tests.deploy.runs import CLS_CONFIG, CLS_DATA, DET_CONFIG, DET_POST, QUIET, ROOT, SEG_CONFIG, SEG_DATA, det_data

pytestmark = pytest.mark.usefixtures("one_thread")


def _check_detection_parity(path: Path) -> dict:
    meta = read_sidecar(path)
    parity = meta["parity"]
    assert parity["images"] == 8 and parity["detections"] > 8 * 5  # every image has detections to compare
    assert parity["images_with_other_count"] == 0 and parity["images_with_other_labels"] == 0
    assert parity["max_box_diff_px"] <= 1e-3
    assert parity["max_score_diff"] <= 1e-5
    for key in ("map", "map_50", "mar_100"):
        assert round(parity["deployed"][key], 3) == round(parity["eager"][key], 3)
    return meta


# ------------------------------------------------------------------------------------------------ detection
def test_detection_onnx_contract_and_parity(det_onnx: Path, det_run, shapes_coco: Path) -> None:
    meta = _check_detection_parity(det_onnx)
    assert meta["task"] == "detection" and meta["format"] == "onnx" and meta["input"]["image_size"] == [96, 96]
    assert [c["id"] for c in meta["classes"]] == [1, 3, 7, 9]  # the dataset's gapped category ids
    assert meta["post_processing"]["detections_per_img"] == 15 and meta["versions"]["onnx_opset"] == "18"
    assert AnchorSettings(**meta["anchors"]).plain() == meta["anchors"]  # the anchors block, as a config holds it

    model = DeployedModel(det_onnx)
    images = torch.rand(3, 3, 96, 96)  # another batch size than the export's example (2)
    out = model(images)
    assert out["boxes"].shape == (3, 15, 4) and out["scores"].shape == (3, 15)
    assert out["labels"].dtype == torch.int64 and out["num_detections"].dtype == torch.int64
    for boxes, scores, labels, n in zip(out["boxes"], out["scores"], out["labels"], out["num_detections"]):
        assert set(labels[:n].tolist()) <= {1, 3, 7, 9}
        assert (boxes[n:] == 0).all() and (scores[n:] == 0).all() and (labels[n:] == 0).all()
        assert (scores[:n].diff() <= 0).all()  # best first
        assert (boxes[:n, 2:] >= boxes[:n, :2]).all() and boxes.max() <= 96 and boxes.min() >= 0


def test_detection_executorch_parity(det_run, shapes_coco: Path) -> None:
    """Exported at 64 x 80 from data resized to 96 x 96: the parity check feeds the file its own size."""
    folder, checkpoint = det_run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        path = export(["--config", DET_CONFIG, "--ckpt_path", str(checkpoint), "--format", "executorch",
                       "--output", str(folder / "export" / "det.pte"), *det_data(shapes_coco), *DET_POST,
                       "--image_size", "64", "80"])
    meta = _check_detection_parity(path)
    assert meta["format"] == "executorch" and meta["versions"]["delegate"] == "XNNPACK"
    assert meta["input"]["image_size"] == [64, 80]
    model = DeployedModel(path)
    out = model(torch.rand(1, 3, 64, 80))
    assert out["boxes"].shape == (1, 15, 4)
    # More images than the program's memory plan holds are run in parts, with the same results per image.
    images = torch.rand(model.max_input_size[0] + 2, 3, 64, 80)
    many, one = model(images), model(images[-1:])
    assert many["boxes"].shape[0] == len(images) and torch.equal(many["boxes"][-1:], one["boxes"])


def test_validate_and_predict_run_the_exported_detector(det_onnx: Path, det_run, shapes_coco: Path,
                                                         monkeypatch) -> None:
    """The same metrics and the same predictions.json from the ONNX file as from the checkpoint."""
    folder, checkpoint = det_run
    monkeypatch.chdir(folder)
    common = ["--config", DET_CONFIG, *det_data(shapes_coco), *DET_POST, *QUIET, "--ckpt_path", str(checkpoint),
              "--data.init_args.predict_images", str(shapes_coco / "val2017")]
    eager = cli_main(["validate", *common]).trainer.callback_metrics
    deployed = cli_main(["validate", *common, "--model.init_args.inference", str(det_onnx)]).trainer.callback_metrics
    assert "val/loss" in eager and "val/loss" not in deployed  # the exported graph gives detections, no loss
    for key in ("val/map", "val/map_50", "val/mar_100"):
        assert round(float(deployed[key]), 3) == round(float(eager[key]), 3)

    written = {}
    for name, extra in (("eager", []), ("deployed", ["--model.init_args.inference", str(det_onnx)])):
        cli_main(["predict", *common, *extra])
        out = folder / "runs" / "ssdlite_mobilenetv2_coco" / "predictions"
        written[name] = (json.loads((out / "predictions.json").read_text()), sorted(p.name for p in out.glob("*.jpg")))
    (eager_json, eager_pictures), (deployed_json, deployed_pictures) = written["eager"], written["deployed"]
    assert deployed_pictures == eager_pictures and len(eager_pictures) == 8
    assert len(deployed_json) == len(eager_json) > 0
    # The same detections, paired one to one: detections of (nearly) tied scores may come out in either order.
    eager, deployed = _per_image(eager_json), _per_image(deployed_json)
    assert eager.keys() == deployed.keys()
    for name, e in eager.items():
        d = deployed[name]
        rows, cols = match_detections(e, d)
        assert len(rows) == len(e["scores"]) == len(d["scores"]), f"{name}: not every detection has a counterpart"
        torch.testing.assert_close(d["scores"][cols], e["scores"][rows], atol=1e-4, rtol=0)
        torch.testing.assert_close(d["boxes"][cols], e["boxes"][rows], atol=0.02, rtol=0)


def _per_image(predictions: list[dict]) -> dict[str, dict[str, torch.Tensor]]:
    """``predictions.json`` entries by image, as :func:`match_detections` takes them (boxes xyxy, category ids)."""
    images: dict[str, list[dict]] = {}
    for prediction in predictions:
        images.setdefault(prediction["file_name"], []).append(prediction)
    return {name: {"boxes": box_convert(torch.tensor([p["bbox"] for p in rows]), "xywh", "xyxy"),
                   "labels": torch.tensor([p["category_id"] for p in rows]),
                   "scores": torch.tensor([p["score"] for p in rows])} for name, rows in images.items()}


def test_exported_detector_refuses_fit_and_other_sizes(det_onnx: Path, det_run, shapes_coco: Path,
                                                        monkeypatch) -> None:
    folder, checkpoint = det_run
    monkeypatch.chdir(folder)
    common = ["--config", DET_CONFIG, *det_data(shapes_coco), *QUIET, "--ckpt_path", str(checkpoint),
              "--model.init_args.inference", str(det_onnx)]
    with pytest.raises(ValueError, match="cannot be trained"):
        cli_main(["fit", *common, "--trainer.max_steps", "1"])
    with pytest.raises(ValueError, match=r"exported for \[96, 96\].*--image_size"):
        cli_main(["validate", *common, "--data.init_args.image_size", "128"])


def test_export_script_runs_from_the_command_line(det_run, shapes_coco: Path, tmp_path: Path) -> None:
    """``python export.py`` as a user types it; no validation set under this root, so no parity figures."""
    folder, checkpoint = det_run
    output = tmp_path / "cli.onnx"
    result = subprocess.run(
        [sys.executable, str(ROOT / "export.py"), "--config", DET_CONFIG, "--ckpt_path", str(checkpoint),
         "--output", str(output), *det_data(tmp_path / "no_coco_here"), "--image_size", "64", "64",
         # The fewest candidates that still fill the 4 detections: this test is about the command, not the NMS.
         "--model.init_args.post_processing.topk_candidates", "8",
         "--model.init_args.post_processing.detections_per_img", "4"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = read_sidecar(output)
    assert meta["input"]["image_size"] == [64, 64] and "skipped" in meta["parity"]
    # Class names and ids come from the checkpoint when the dataset is absent.
    assert [c["id"] for c in meta["classes"]] == [1, 3, 7, 9]
    assert DeployedModel(output)(torch.rand(1, 3, 64, 64))["boxes"].shape == (1, 4, 4)


# --------------------------------------------------------------------------------------------- segmentation
def test_segmentation_onnx_parity(seg_onnx: Path) -> None:
    meta = read_sidecar(seg_onnx)
    parity = meta["parity"]
    assert meta["input"]["image_size"] == [40, 56]  # traced there; the 48 x 64 validation images run all the same
    assert parity["images"] == 3 and parity["pixels_with_other_label"] == 0
    assert parity["max_logit_diff"] < 1e-3 and parity["deployed"] == parity["eager"]
    assert meta["outputs"][0]["name"] == "logits" and meta["classes"][0]["name"] == "background"
    model = DeployedModel(seg_onnx)
    for shape in ((1, 3, 48, 64), (2, 3, 37, 53)):  # H and W are dynamic
        assert model(torch.rand(*shape))["logits"].shape == (shape[0], 5, *shape[2:])


def test_segmentation_argmax_export_and_predict(seg_run, seg_onnx: Path, monkeypatch) -> None:
    """``--argmax`` gives int64 labels; predict through the logits file writes the eager run's PNG masks."""
    folder, checkpoint = seg_run
    monkeypatch.chdir(folder)
    labels = export(["--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), "--argmax", *SEG_DATA,
                     "--output", str(folder / "export" / "seg_labels.onnx")])
    assert read_sidecar(labels)["parity"]["pixels_with_other_label"] == 0
    out = DeployedModel(labels)(torch.rand(1, 3, 40, 56))
    assert out["labels"].shape == (1, 40, 56) and out["labels"].dtype == torch.int64

    logits = seg_onnx
    masks = {}
    predictions = folder / "runs" / "deeplabv3lite_shapes_demo" / "predictions" / "masks"
    common = ["predict", "--config", SEG_CONFIG, *SEG_DATA, *QUIET, "--ckpt_path", str(checkpoint),
              "--data.init_args.predict_images", "data/shapes_voc/VOCdevkit/VOC2012/JPEGImages"]
    for name, extra in (("eager", []), ("deployed", ["--model.init_args.inference", str(logits)])):
        cli_main([*common, *extra])
        masks[name] = {p.name: np.asarray(Image.open(p)) for p in sorted(predictions.glob("*.png"))}
    assert masks["eager"].keys() == masks["deployed"].keys() and masks["eager"]
    for name, mask in masks["eager"].items():
        assert np.array_equal(mask, masks["deployed"][name])
    with pytest.raises(ValueError, match="without --argmax"):
        cli_main([*common, "--model.init_args.inference", str(labels)])


def test_deployed_model_needs_its_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match=r"model\.onnx\.json is missing.*export\.py"):
        DeployedModel(path)


# ------------------------------------------------------------------------------------------- classification
def test_classification_onnx_parity(cls_run) -> None:
    folder, checkpoint = cls_run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        path = export(["--config", CLS_CONFIG, "--ckpt_path", str(checkpoint), *CLS_DATA,
                       "--output", str(folder / "export" / "cls.onnx")])
    meta = read_sidecar(path)
    parity = meta["parity"]
    assert parity["images"] > 0 and parity["images_with_other_class"] == 0 and parity["max_logit_diff"] < 1e-3
    assert parity["deployed"] == parity["eager"]
    assert meta["task"] == "classification" and len(meta["classes"]) == 4
    assert meta["input"]["size_range"] == [64, 2048]
    assert DeployedModel(path)(torch.rand(3, 3, 96, 80))["logits"].shape == (3, 4)  # any size: global pooling
