"""Batch-1 CPU latency of our DeepLabv3 models against torchvision's and smp's mobile segmentation models.

    python -m benchmarks.segmentation_latency --runs 20 --threads 1 --size 512

Every model is built with random weights (nothing downloads), 21 classes, put in eval mode and run under
``torch.inference_mode`` on one ``(1, 3, size, size)`` input: ``--warmup`` runs first, then the median (and
the 10th / 90th percentiles) of ``--runs`` timed runs. All models run in the same process, interleaved round
by round, so a machine that gets busier halfway through slows every model alike. The paper reports
MobileNetV2 latencies on one big core of a Pixel 1 phone; ``--threads 1`` is the closest setting on a PC.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from mobilenetv2_dense.backbone.complexity import count_madds, count_parameters
from mobilenetv2_dense.models.deeplab import deeplabv3_mobilenet_v2

NUM_CLASSES = 21


def _builders() -> dict[str, Callable[[], nn.Module]]:
    import segmentation_models_pytorch as smp
    from torchvision.models import segmentation as tvseg

    return {
        "ours DeepLabV3 lite OS16": lambda: deeplabv3_mobilenet_v2(num_classes=NUM_CLASSES, head="lite"),
        "ours DeepLabV3 ASPP OS16": lambda: deeplabv3_mobilenet_v2(num_classes=NUM_CLASSES, head="aspp"),
        "tv lraspp_mobilenet_v3_large": lambda: tvseg.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES),
        "tv deeplabv3_mobilenet_v3_large": lambda: tvseg.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=NUM_CLASSES),
        "smp DeepLabV3Plus mobilenet_v2": lambda: smp.DeepLabV3Plus(
            encoder_name="mobilenet_v2", encoder_weights=None, classes=NUM_CLASSES),
    }


def measure(models: dict[str, nn.Module], size: int, runs: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per forward of each model; rounds interleave the models."""
    x = torch.randn(1, 3, size, size)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(warmup):
                model(x)
        for _ in range(runs):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def format_table(models: dict[str, nn.Module], times: dict[str, list[float]], size: int) -> str:
    reference = statistics.median(next(iter(times.values())))
    header = (f"{'model':<34} {'params':>8} {'MAdds':>8} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} "
              f"{'x ours lite':>11}")
    lines = [header, "-" * len(header)]
    for name, model in models.items():
        median = statistics.median(times[name])
        params = count_parameters(model) / 1e6
        madds = count_madds(model, (size, size)) / 1e9
        lines.append(f"{name:<34} {params:>7.2f}M {madds:>7.2f}B {median:>10.1f} "
                     f"{_percentile(times[name], 0.1):>8.1f} {_percentile(times[name], 0.9):>8.1f} "
                     f"{median / reference:>11.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per model (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per model first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (paper: one phone core)")
    parser.add_argument("--size", type=int, default=512, help="square input side; 512 as in paper Table 7")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.size < 32 or args.threads < 1:
        parser.error(f"need --runs >= 1, --size >= 32, --threads >= 1; got {args.runs}, {args.size}, {args.threads}")
    if args.size % 16:
        parser.error(f"--size must be a multiple of 16 (smp's DeepLabV3Plus checks it), got {args.size}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: build().eval() for name, build in _builders().items()}
    times = measure(models, args.size, args.runs, args.warmup)
    table = format_table(models, times, args.size)
    print(f"batch 1, {args.size}x{args.size}, CPU, {args.threads} thread(s), torch {torch.__version__}, "
          f"{args.warmup} warm-up + {args.runs} timed runs, eval + inference_mode")
    print(table)
    return table


if __name__ == "__main__":
    main()
