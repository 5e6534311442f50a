"""int8 by calibration (PTQ) against int8 by quantisation-aware training (QAT), on one setting, end to end.

    python -m benchmarks.qat --config configs/ssdlite_shapes_demo.yaml --format executorch --qat_epochs 3 \\
        --model.init_args.backbone.width_mult 0.35 --data.init_args.image_size 128

Every step is the command a user runs (``train_task.py fit``, ``export.py``), in this process, in ``--output_dir``:

1. ``fit`` the config in float (or take ``--float_ckpt``);
2. ``export.py --int8`` of the float checkpoint: post-training quantisation, ``--calibration`` training images;
3. ``fit`` with ``--model.init_args.qat.weights <float checkpoint>`` for ``--qat_epochs`` at ``--qat_lr`` (cosine,
   no warm-up; the activation ranges calibrated on ``--qat_calibration`` training images at the start, the BatchNorm
   statistics frozen from ``--freeze_batchnorm_epoch``, by default for the last epoch);
4. ``export.py --int8`` of the QAT checkpoint: converted, not calibrated.

Each export's parity pass scores the int8 file and its eager reference on the config's validation set (COCO mAP for
detection, mIoU for segmentation): the float model for PTQ, the fake-quantised network for QAT. The table gives the
float model, the PTQ file, the fake-quantised QAT network and the QAT file, each change in points against the float
model of step 1. Extra ``--model.*`` / ``--data.*`` / ``--trainer.*``
options go to every step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.commands.export import export
from mobilenetv2_dense.deploy.runtime import read_sidecar

QUIET = ["--trainer.enable_model_summary", "false"]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="benchmarks.qat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--float_ckpt", help="a float checkpoint of the config (skips step 1)")
    parser.add_argument("--format", choices=("onnx", "executorch"), default="executorch")
    parser.add_argument("--calibration", type=int, default=64, help="PTQ calibration images")
    parser.add_argument("--qat_epochs", type=int, default=3)
    parser.add_argument("--qat_lr", type=float, default=3e-4, help="peak lr of the QAT fine-tuning (AdamW configs)")
    parser.add_argument("--freeze_batchnorm_epoch", type=int,
                        help="qat.freeze_batchnorm_epoch (default: the last epoch; 0: the float model's statistics)")
    parser.add_argument("--qat_calibration", type=int, default=64,
                        help="qat.calibration: images that set the activation ranges at the start (0: moving averages)")
    parser.add_argument("--parity_images", type=int, default=200)
    parser.add_argument("--output_dir", default="runs/benchmarks/qat")
    return parser.parse_known_args(argv)


def _checkpoint(folder: Path) -> Path:
    """The newest ``last.ckpt`` under ``folder``."""
    return max(folder.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)


def _fit(config: str, folder: Path, options: list[str]) -> tuple[Path, float]:
    start = time.perf_counter()
    cli_main(["fit", "--config", config, *options, *QUIET, "--trainer.default_root_dir", str(folder),
              "--trainer.logger.init_args.save_dir", str(folder)])
    return _checkpoint(folder), time.perf_counter() - start


def _export(config: str, checkpoint: Path, output: Path, args: argparse.Namespace, options: list[str]) -> dict:
    export(["--config", config, "--ckpt_path", str(checkpoint), "--format", args.format, "--int8", "--calibration",
            str(args.calibration), "--parity_images", str(args.parity_images), "--output", str(output), *options])
    return read_sidecar(output)


def _metric(parity: dict[str, Any], side: str) -> tuple[str, float]:
    """The headline metric of one side of a parity block, in points: mAP x 100 (detection) or mIoU (segmentation,
    already in percent)."""
    scores = parity[side]
    if "map" in scores:
        return "mAP", 100 * scores["map"]
    return "mIoU", scores["miou"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, options = parse_args(argv)
    root = Path(args.output_dir)
    suffix = ".pte" if args.format == "executorch" else ".onnx"
    timings: dict[str, float] = {}
    if args.float_ckpt:
        float_ckpt = Path(args.float_ckpt)
    else:
        float_ckpt, timings["float_fit_s"] = _fit(args.config, root / "float", options)
    ptq = _export(args.config, float_ckpt, root / f"ptq{suffix}", args, options)
    qat_options = [*options, "--model.init_args.qat.weights", str(float_ckpt),
                   "--model.init_args.qat.calibration", str(args.qat_calibration),
                   "--model.init_args.qat.freeze_batchnorm_epoch",
                   str(args.qat_epochs - 1 if args.freeze_batchnorm_epoch is None else args.freeze_batchnorm_epoch),
                   "--model.init_args.qat.freeze_observers_epoch", str(max(0, args.qat_epochs - 1)),
                   "--trainer.max_epochs", str(args.qat_epochs), "--model.init_args.optimization.lr", str(args.qat_lr),
                   "--model.init_args.optimization.warmup_epochs", "0",
                   "--model.init_args.optimization.schedule", "cosine"]
    qat_ckpt, timings["qat_fit_s"] = _fit(args.config, root / "qat", qat_options)
    qat = _export(args.config, qat_ckpt, root / f"qat{suffix}", args, options)

    name, reference = _metric(ptq["parity"], "eager")
    rows = [("float (eager)", reference),
            (f"PTQ int8 ({args.format}, {args.calibration} calibration images)", _metric(ptq["parity"], "deployed")[1]),
            (f"QAT after {args.qat_epochs} epochs, fake-quantised (eager)", _metric(qat["parity"], "eager")[1]),
            (f"QAT int8 ({args.format})", _metric(qat["parity"], "deployed")[1])]
    print(f"\n| model | {name} | change |\n|---|---|---|")
    for label, value in rows:
        print(f"| {label} | {value:.2f} | {value - reference:+.2f} |")
    result = {"config": args.config, "options": options, "format": args.format, "metric": name,
              "float_checkpoint": str(float_ckpt), "qat_checkpoint": str(qat_ckpt),
              "rows": {label: round(value, 4) for label, value in rows}, "timings": timings,
              "ptq_parity": ptq["parity"], "qat_parity": qat["parity"]}
    (root / "qat.json").write_text(json.dumps(result, indent=2))
    print(f"\nwrote {root / 'qat.json'}")
    return result


if __name__ == "__main__":
    main()
