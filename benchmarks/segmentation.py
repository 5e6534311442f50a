"""All segmentation benchmarks in one run: batch-1 latency, training throughput, data-loader throughput.

    python -m benchmarks.segmentation [--quick]

Runs, in this process and in this order, each printing its own table with ratios against the peers:
  1. ``segmentation_latency.py``  batch-1 latency at 512x512 of DeepLabv3-lite and DeepLabv3 (ASPP) vs torchvision
     ``lraspp_mobilenet_v3_large`` / ``deeplabv3_mobilenet_v3_large`` and smp ``DeepLabV3Plus("mobilenet_v2")``;
  2. ``segmentation_train.py``    training images/s (512 crops) of the same models;
  3. ``segmentation_data.py``     data-loader images/s with the VOC training augmentation, on generated VOC data.
Each part also runs alone with its own options (``--help``).
"""

from __future__ import annotations

from benchmarks import segmentation_data, segmentation_latency, segmentation_train
from benchmarks.common import run_part, suite_options


def main(argv: list[str] | None = None) -> None:
    quick, threads = suite_options(__doc__, argv)
    run_part(1, "batch-1 latency", lambda: segmentation_latency.main(
        ["--runs", "3" if quick else "20", "--threads", "1", "--size", "512"]))
    run_part(2, "training throughput", lambda: segmentation_train.main(
        ["--threads", str(threads), "--steps", "1" if quick else "5", "--batch", "2" if quick else "4"]))
    run_part(3, "data loading", lambda: segmentation_data.main(
        ["--num-images", "16" if quick else "96", "--batches", "2" if quick else "12"]))


if __name__ == "__main__":
    main()
