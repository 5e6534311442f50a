"""The ``anchors`` command: fit a detection config's anchors to its training boxes and write them as a YAML block
that drops into the config (``python -m mobilenetv2_dense anchors --config CONFIG``)."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import yaml

from ..tasks.detection.anchors import _data_boxes, fit_model_anchors
from .cli import cli_main


def main(argv: list[str] | None = None) -> Path:
    """The ``anchors`` command: returns the YAML file written."""
    parser = argparse.ArgumentParser(
        prog="python -m mobilenetv2_dense anchors",
        description="Fit a detection config's anchors to its training boxes; print the best possible recall and "
                    "mean best IoU before and after, and write the fitted model.init_args as a YAML to pass as a "
                    "second --config. Other --model.* / --data.* options go to the config as on the training "
                    "command line.")
    parser.add_argument("--config", action="append", required=True, help="the experiment's YAML config (repeatable)")
    parser.add_argument("--output", help="YAML to write (default runs/anchors/<config name>.yaml)")
    parser.add_argument("--generations", type=int, default=1000, help="evolutionary search steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search (same seed, same anchors)")
    args, overrides = parser.parse_known_args(argv)

    configs = [option for config in args.config for option in ("--config", config)]
    with warnings.catch_warnings():  # LightningCLI warns that sys.argv differs from args: here it must
        warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
        cli = cli_main([*configs, *overrides, "--model.init_args.backbone.weights", "null"], run=False)
    if cli.model.task_name not in ("detection", "joint"):
        raise TypeError(f"anchors: {', '.join(args.config)} builds a {type(cli.model).__name__}; anchors belong to "
                        "detectors: pass a config whose model is a DetectionTask or JointTask "
                        "(e.g. configs/ssdlite_shapes_demo.yaml)")
    datamodule = cli.datamodule
    datamodule.prepare_data()  # writes generated data on first use; checks that real data is there
    boxes, image_size = _data_boxes(datamodule, "anchors")
    report = fit_model_anchors(cli.model.model, boxes, image_size, generations=args.generations, seed=args.seed)
    print(report.text())

    output = Path(args.output or Path("runs/anchors") / f"{Path(args.config[0]).stem}.yaml")
    output.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m mobilenetv2_dense anchors", *configs, *overrides])
    header = (f"# Anchors fitted by: {command}\n"
              f"# on {report.before.boxes} training boxes of {report.images} images at {image_size[0]}x{image_size[1]}:"
              f" best possible recall {report.before.bpr:.3f} -> {report.after.bpr:.3f}, mean best IoU "
              f"{report.before.mean_best_iou:.3f} -> {report.after.mean_best_iou:.3f}.\n"
              f"# Pass it after the experiment's config: python train_task.py fit "
              f"{' '.join([*configs, '--config', str(output), *overrides])}\n")
    body = yaml.safe_dump({"model": {"init_args": {"anchors": report.fitted.plain()}}}, default_flow_style=None,
                          sort_keys=False)
    output.write_text(header + body)
    print(f"anchors: wrote {output}")
    return output
