"""The benchmark command: a checkpoint in every deploy format, with its metric and its latency, in one table.

    mobilenetv2-dense benchmark --config configs/ssdlite_shapes_demo.yaml --ckpt_path best.ckpt --int8
    mobilenetv2-dense benchmark --config my.yaml --ckpt_path best.ckpt --formats onnx --data.init_args.root /data

For each format (``--formats``: ``onnx`` and ``executorch`` by default, ``litert`` where ``pip install -e .[litert]``
installed litert-torch; float, and int8 too with ``--int8``) the export command writes the file into ``--output_dir``
and runs its parity check on the config's validation set, which gives the exported file's metric beside the eager
model's. Then every backend, the eager PyTorch model first, runs one validation image at batch 1
at the export's input size: the median of ``--runs`` interleaved calls after a warm-up, on ``--threads`` threads.
The table goes to the terminal and the same rows, with the machine and versions, to ``benchmark.json``.

Any other ``--model.init_args.*`` / ``--data.init_args.*`` option goes to the config as for ``export.py`` (and
``train_task.py``): a checkpoint trained on other paths or at another size is benchmarked on its own validation set
at its own size.

Metrics (from the parity figures, on up to ``--parity_images`` validation images): detection COCO mAP, segmentation
mIoU (%), joint both, classification top-1; a row's ``delta`` is to the eager model on the images its file saw (a
LiteRT segmenter's, of one input size, resized to it). ``speed-up`` is the eager latency over the row's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..deploy.backend import NetworkBackend
from ..deploy.formats import SUFFIX
from ..deploy.graph import denormalize
from ..deploy.runtime import DeployedModel, read_sidecar
from ..deploy.timing import median_latency
from .export import build_task, export

FORMATS = tuple(SUFFIX)
DEFAULT_FORMATS = ("onnx", "executorch")  # litert needs the optional litert-torch: asked for by name
# The figure each task is judged by in its parity block, as (block or None, key, name in the table).
METRICS: dict[str, list[tuple[str | None, str, str]]] = {
    "detection": [(None, "map", "mAP")],
    "segmentation": [(None, "miou", "mIoU")],
    "classification": [(None, "acc1", "top-1")],
    "joint": [("detection", "map", "mAP"), ("segmentation", "miou", "mIoU")],
}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="mobilenetv2-dense benchmark", description="Export a checkpoint in every deploy format, compare each "
        "file's metric with the eager model's on the config's validation set and time each at batch 1; other "
        "--model.* / --data.* options go to the config as on the training command line.")
    parser.add_argument("--config", required=True, help="the experiment's YAML config")
    parser.add_argument("--ckpt_path", help="a checkpoint of that config (without one the weights are random)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(DEFAULT_FORMATS),
                        help="formats to export (default: onnx executorch; litert needs pip install -e .[litert])")
    parser.add_argument("--int8", action="store_true", help="also export each format with int8 quantisation")
    parser.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"),
                        help="the export's input size (default: the data's, as export.py)")
    parser.add_argument("--parity_images", type=int, default=200, help="validation images the metrics are measured on")
    parser.add_argument("--calibration", type=int, default=64, help="training images that calibrate int8")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per backend (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per backend first")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of every backend (1: as a phone runs one model on one big core)")
    parser.add_argument("--output_dir", help="where the files and benchmark.json go "
                                             "(default runs/benchmark/<config name>)")
    return parser.parse_known_args(argv)


def metrics_of(parity: dict[str, Any] | None, task: str, side: str) -> dict[str, float] | None:
    """``{"mAP": ..., ...}`` of one side (``"eager"`` / ``"deployed"``) of the export's parity figures, or ``None``
    when parity was skipped (no validation set on disk, or ``--parity_images 0``)."""
    if not parity or "skipped" in parity:
        return None
    out = {}
    for block, key, name in METRICS[task]:
        figures = parity[block] if block else parity
        out[name] = float(figures[side][key])
    return out


def benchmark_image(datamodule: Any, size: tuple[int, int]) -> tuple[Tensor, str]:
    """One normalised validation image ``(1, 3, H, W)`` at the export's ``size`` and where it came from; a random
    image (normalised) when the validation set cannot be read. A detector's post-processing time depends on what it
    sees, so a real image is preferred."""
    try:
        datamodule.setup("validate")
        batch = next(iter(datamodule.val_dataloader()))
        image = (batch[0] if isinstance(batch, (list, tuple)) else batch["images"])[:1].float()
        source = "the first validation image"
    except (FileNotFoundError, NotADirectoryError, StopIteration) as error:
        image = (torch.rand(1, 3, *size) - torch.tensor(datamodule.mean)[:, None, None]) / torch.tensor(
            datamodule.std)[:, None, None]
        source = f"a random image (no validation image: {error})"
    if tuple(image.shape[-2:]) != tuple(size):
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    return image, source


def export_formats(args: argparse.Namespace, overrides: list[str], folder: Path) -> list[Path]:
    """Each format of ``args.formats`` (float, then int8 with ``--int8``) written by the export command, with its
    parity figures in its sidecar."""
    paths = []
    for fmt in args.formats:
        for int8 in (False, True) if args.int8 else (False,):
            output = folder / f"{Path(args.config).stem}{'.int8' if int8 else ''}{SUFFIX[fmt]}"
            argv = ["--config", args.config, "--format", fmt, "--output", str(output),
                    "--parity_images", str(args.parity_images), "--calibration", str(args.calibration)]
            argv += ["--ckpt_path", args.ckpt_path] if args.ckpt_path else []
            argv += ["--image_size", *map(str, args.image_size)] if args.image_size else []
            paths.append(export([*argv, *(["--int8"] if int8 else []), *overrides]))
    return paths


def benchmark(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark command on ``argv``; returns what ``benchmark.json`` holds (``rows``: one per backend)."""
    args, overrides = parse_args(argv)
    if args.threads < 1 or args.runs < 1:
        raise SystemExit(f"benchmark: --threads and --runs must be at least 1, got {args.threads} and {args.runs}")
    folder = Path(args.output_dir or Path("runs/benchmark") / Path(args.config).stem)
    folder.mkdir(parents=True, exist_ok=True)
    paths = export_formats(args, overrides, folder)

    task, datamodule, _ = build_task(args.config, args.ckpt_path, overrides)
    metas = [read_sidecar(path) for path in paths]
    kind = task.task_name
    size = tuple(metas[0]["input"]["image_size"]) if metas else (
        tuple(args.image_size) if args.image_size else (datamodule.image_size, datamodule.image_size))
    image, source = benchmark_image(datamodule, size)
    raw = denormalize(image, datamodule.mean, datamodule.std)

    torch.set_num_threads(args.threads)
    eager = NetworkBackend(task.model.eval(), "eager")
    contenders = {"eager": lambda: eager(image)}
    for path in paths:
        deployed = DeployedModel(path, threads=args.threads)
        contenders[path.name] = lambda d=deployed: d(raw)
    seconds = median_latency(contenders, runs=args.runs, warmup=args.warmup)

    eager_metrics = next((m for m in (metrics_of(meta["parity"], kind, "eager") for meta in metas) if m), None)
    rows = [{"format": "pytorch (eager)", "file": None, "size_mb": None, "metrics": eager_metrics,
             "delta": {name: 0.0 for name in eager_metrics} if eager_metrics else None,
             "ms": seconds["eager"] * 1e3, "speedup": 1.0}]
    for path, meta in zip(paths, metas):
        metrics = metrics_of(meta["parity"], kind, "deployed")
        # against the eager model on the images this file saw: a LiteRT segmenter's resized to its one input size
        eager_here = metrics_of(meta["parity"], kind, "eager")
        delta = {name: metrics[name] - eager_here[name] for name in metrics} if metrics and eager_here else None
        rows.append({"format": f"{meta['format']} {'int8' if 'int8' in meta else 'fp32'}", "file": str(path),
                     "size_mb": path.stat().st_size / 1e6, "metrics": metrics, "delta": delta,
                     "ms": seconds[path.name] * 1e3, "speedup": seconds["eager"] / seconds[path.name]})
    report = {"config": args.config, "checkpoint": args.ckpt_path, "task": kind, "image_size": list(size),
              "batch": 1, "threads": args.threads, "runs": args.runs, "latency_input": source,
              "parity_images": (metas[0]["parity"] or {}).get("images") if metas else None,
              "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "rows": rows}
    json_path = folder / "benchmark.json"
    json_path.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"benchmark: wrote {json_path}")
    return report


def table(report: dict[str, Any]) -> str:
    """The report as a text table: format, file size, metrics, delta to eager, ms, speed-up."""
    names = [name for _, _, name in METRICS[report["task"]]]
    header = ["format", "size MB", *names, *(f"d{name}" for name in names), "ms", "speed-up"]

    def cell(values: dict | None, name: str, signed: bool = False) -> str:
        if values is None:
            return "-"
        return f"{values[name]:+.4f}" if signed else f"{values[name]:.4f}"

    lines = [header]
    for row in report["rows"]:
        lines.append([row["format"], "-" if row["size_mb"] is None else f"{row['size_mb']:.2f}",
                      *(cell(row["metrics"], n) for n in names), *(cell(row["delta"], n, True) for n in names),
                      f"{row['ms']:.1f}", f"{row['speedup']:.2f}x"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    title = (f"benchmark: {report['task']} at {report['image_size'][0]}x{report['image_size'][1]}, batch 1, "
             f"{report['threads']} thread(s), median of {report['runs']}; metrics on {report['parity_images']} "
             "validation images")
    return "\n".join([title, *("  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in lines)])


def main(argv: list[str] | None = None) -> None:
    benchmark(argv)


if __name__ == "__main__":
    main()
