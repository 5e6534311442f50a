"""Backbone latency on the CPU: this project's MobileNetV2 vs torchvision's, same process, as ratios.

    python -m benchmarks.backbone [--runs 30] [--threads 2]

Both models are the 1000-class classifier at 224x224 in eval mode (identical parameter count); a ratio
below 1.0 means ours is faster. Also run with channels_last memory format.
"""

from __future__ import annotations

import argparse

import torch
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

from benchmarks.common import median_latency, print_table
from mobilenetv2_dense.backbone import mobilenet_v2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        ours = mobilenet_v2(num_classes=1000).eval().to(memory_format=memory_format)
        theirs = tv_mobilenet_v2().eval().to(memory_format=memory_format)
        for batch in (1, 8):
            x = torch.randn(batch, 3, args.size, args.size).contiguous(memory_format=memory_format)
            fns = {"ours": lambda m=ours, x=x: m(x), "torchvision": lambda m=theirs, x=x: m(x)}
            t = median_latency(fns, runs=args.runs)
            layout = "channels_last" if memory_format == torch.channels_last else "NCHW"
            rows.append((layout, batch, f"{t['ours'] * 1e3:.2f}", f"{t['torchvision'] * 1e3:.2f}",
                         f"{t['ours'] / t['torchvision']:.3f}"))
    print_table(f"MobileNetV2 1.0, {args.size}x{args.size}, {args.threads} threads, median of {args.runs} runs",
                rows, ("layout", "batch", "ours ms", "torchvision ms", "ratio ours/tv"))


if __name__ == "__main__":
    main()
