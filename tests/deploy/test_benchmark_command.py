"""``mobilenetv2-dense benchmark`` on small trained checkpoints of each task: every format exported, its metric
against the eager model's from the parity run, a latency per backend, one table and the same rows as JSON, the
config options passed through (the runs' own data paths and sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mobilenetv2_dense.__main__ import main
from mobilenetv2_dense.deploy.runtime import read_sidecar
from tests.conftest import JOINT_CONFIG, JOINT_POST
from tests.deploy.runs import DET_CONFIG, DET_POST, SEG_CONFIG, SEG_DATA, det_data

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = ["--runs", "2", "--warmup", "1"]


def run_benchmark(folder: Path, config: str, checkpoint: Path, options: list[str], capsys) -> dict:
    """The command as a user types it (in ``folder``); returns benchmark.json, checked against the printed table."""
    out = folder / "bench"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(["benchmark", "--config", config, "--ckpt_path", str(checkpoint), "--output_dir", str(out), *QUICK,
              *options])
    report = json.loads((out / "benchmark.json").read_text())
    printed = capsys.readouterr().out
    for row in report["rows"]:  # every row of the JSON is a line of the table, with its latency
        line = next(line for line in printed.splitlines() if line.startswith(row["format"] + " "))
        assert f"{row['ms']:.1f}" in line and f"{row['speedup']:.2f}x" in line
    assert report["rows"][0]["format"] == "pytorch (eager)" and report["rows"][0]["speedup"] == 1.0
    for row in report["rows"][1:]:
        assert Path(row["file"]).stat().st_size / 1e6 == pytest.approx(row["size_mb"])
        assert row["ms"] > 0 and row["speedup"] == pytest.approx(report["rows"][0]["ms"] / row["ms"])
    return report


def test_detection_benchmark_scores_each_file_on_the_runs_own_data(det_run, shapes_coco: Path, capsys) -> None:
    folder, checkpoint = det_run
    report = run_benchmark(folder, DET_CONFIG, checkpoint, ["--formats", "onnx", *det_data(shapes_coco), *DET_POST],
                           capsys)
    assert report["task"] == "detection" and report["image_size"] == [96, 96]  # the run's size, not the config's 320
    assert report["parity_images"] == 8 and report["latency_input"] == "the first validation image"
    eager, onnx = report["rows"]
    assert [onnx["format"]] == ["onnx fp32"] and Path(onnx["file"]).suffix == ".onnx"
    parity = read_sidecar(onnx["file"])["parity"]  # the metrics are the export's own parity figures
    assert eager["metrics"] == {"mAP": parity["eager"]["map"]} and onnx["metrics"] == {"mAP": parity["deployed"]["map"]}
    assert onnx["delta"]["mAP"] == pytest.approx(0.0, abs=1e-3)  # fp32 ONNX scores what the eager model scores


def test_segmentation_benchmark_with_int8_rows(seg_run, capsys) -> None:
    folder, checkpoint = seg_run
    report = run_benchmark(folder, SEG_CONFIG, checkpoint, ["--formats", "onnx", "--int8", "--calibration", "4",
                                                            *SEG_DATA], capsys)
    assert [row["format"] for row in report["rows"]] == ["pytorch (eager)", "onnx fp32", "onnx int8"]
    eager, fp32, int8 = report["rows"]
    assert set(eager["metrics"]) == {"mIoU"} and fp32["delta"]["mIoU"] == pytest.approx(0.0, abs=1e-3)
    assert int8["size_mb"] < fp32["size_mb"] / 2  # int8 weights
    assert "int8" in read_sidecar(int8["file"]) and "int8" not in read_sidecar(fp32["file"])
    assert int8["delta"]["mIoU"] == pytest.approx(int8["metrics"]["mIoU"] - eager["metrics"]["mIoU"])


def test_joint_benchmark_reports_both_metrics(joint_run, shapes_coco: Path, capsys) -> None:
    folder, checkpoint = joint_run
    report = run_benchmark(folder, JOINT_CONFIG, checkpoint, [
        "--formats", "onnx", "--data.init_args.root", str(shapes_coco), "--data.init_args.image_size", "64",
        "--data.init_args.num_workers", "0", "--data.init_args.val_batch_size", "4", *JOINT_POST], capsys)
    assert report["task"] == "joint" and report["image_size"] == [64, 64]
    eager, onnx = report["rows"]
    assert set(eager["metrics"]) == {"mAP", "mIoU"} and set(onnx["delta"]) == {"mAP", "mIoU"}
    assert abs(onnx["delta"]["mAP"]) <= 1e-3 and abs(onnx["delta"]["mIoU"]) <= 1e-3
