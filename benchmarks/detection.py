"""All detection benchmarks in one run: latency, training and data-loader throughput, COCO evaluation time.

    python -m benchmarks.detection [--quick]

Runs, in this process and in this order, each printing its own table with ratios against the peer:
  1. ``detection_latency.py``  batch-1 end-to-end latency at 320 (network + decode + NMS) vs torchvision
     ``ssdlite320_mobilenet_v3_large``, one thread;
  2. ``detection_train.py``    training images/s vs the same torchvision model, and COCO eval time with
     pycocotools vs faster-coco-eval (identical metrics checked);
  3. ``detection_data.py``     data-loader images/s with the full SSD augmentation, on generated COCO-format data.
Each part also runs alone with its own options (``--help``).
"""

from __future__ import annotations

from benchmarks import detection_data, detection_latency, detection_train
from benchmarks.common import run_part, suite_options


def main(argv: list[str] | None = None) -> None:
    quick, threads = suite_options(__doc__, argv)
    run_part(1, "end-to-end latency", lambda: detection_latency.main(
        ["--runs", "5" if quick else "30", "--threads", "1"]))
    run_part(2, "training throughput and COCO evaluation", lambda: detection_train.main(
        ["--threads", str(threads), "--iters", "2" if quick else "6", "--num-val", "100" if quick else "500"]))
    run_part(3, "data loading", lambda: detection_data.main(
        ["--num-train", "64" if quick else "1500", "--num-val", "16" if quick else "200",
         "--batches", "2" if quick else "8"]))


if __name__ == "__main__":
    main()
