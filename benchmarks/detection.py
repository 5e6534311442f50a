"""All detection benchmarks in one run: latency, training and data-loader throughput, COCO evaluation time.

    python benchmarks/detection.py [--quick]

Runs, in this process and in this order, each printing its own table with ratios against the peer:
  1. ``detection_latency.py``  batch-1 end-to-end latency at 320 (network + decode + NMS) vs torchvision
     ``ssdlite320_mobilenet_v3_large``, one thread;
  2. ``detection_train.py``    training images/s vs the same torchvision model, and COCO eval time with
     pycocotools vs faster-coco-eval (identical metrics checked);
  3. ``detection_data.py``     data-loader images/s with the full SSD augmentation, on generated COCO-format data.
Each part also runs alone with its own options (``--help``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository root

from benchmarks import detection_data, detection_latency, detection_train  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and images (a smoke run, noisier)")
    args = parser.parse_args(argv)
    quick = args.quick
    threads = torch.get_num_threads()  # the latency part sets 1 thread; training uses them all
    print("=" * 30, "1. end-to-end latency", "=" * 30)
    detection_latency.main(["--runs", "5" if quick else "30", "--threads", "1"])
    print("\n" + "=" * 30, "2. training throughput and COCO evaluation", "=" * 30)
    detection_train.main(["--threads", str(threads), "--iters", "2" if quick else "6",
                          "--num-val", "100" if quick else "500"])
    print("\n" + "=" * 30, "3. data loading", "=" * 30)
    detection_data.main(["--num-train", "64" if quick else "1500", "--num-val", "16" if quick else "200",
                         "--batches", "2" if quick else "8"])


if __name__ == "__main__":
    main()
