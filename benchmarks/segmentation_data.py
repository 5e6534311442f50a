"""Segmentation data speed: the set-up check (ms per mask) and training loader throughput (images/s).

    python -m benchmarks.segmentation_data                      # generated VOC-sized scenes in a temp folder
    python -m benchmarks.segmentation_data --root data/voc      # a real VOCdevkit (its ``train`` split)

Training samples go through the full DeepLab augmentation (random scale 0.5-2.0, pad, crop, flip, normalise)
and ``segmentation_collate``, with 0, 1 and 2 DataLoader workers. The main process runs torch and OpenCV with
``--threads`` (1) threads, as a DataLoader worker does, so 0 workers measures one core.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader

from mobilenetv2_dense.datasets.checks import DatasetReport
from mobilenetv2_dense.datasets.segmentation.dataset import SegmentationDataset, segmentation_collate
from mobilenetv2_dense.datasets.segmentation.shapes import write_shapes_voc
from mobilenetv2_dense.datasets.segmentation.transforms import train_transforms
from mobilenetv2_dense.datasets.segmentation.voc import check_samples, find_voc2012, voc_samples


def time_check(samples: list, workers: int) -> float:
    """Milliseconds per sample of the set-up check (header reads + full mask decode + label histogram)."""
    start = time.perf_counter()
    check_samples(samples, num_classes=21, report=DatasetReport("benchmark"), workers=workers)
    return 1000 * (time.perf_counter() - start) / len(samples)


def time_loader(dataset: SegmentationDataset, *, batch_size: int, workers: int, batches: int) -> float:
    """Images per second through augmentation + collate, after one warm-up batch (worker start-up excluded)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        collate_fn=segmentation_collate, persistent_workers=workers > 0)
    iterator = iter(loader)
    next(iterator)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            images = next(iterator)[0]
        except StopIteration:
            iterator = iter(loader)
            images = next(iterator)[0]
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", help="a VOC root; default: write generated scenes to a temp folder")
    parser.add_argument("--num-images", type=int, default=96, help="generated images (500x375-like sizes)")
    parser.add_argument("--crop-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per worker setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV threads of the main process (DataLoader workers use 1 torch thread)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.root) if args.root else Path(scratch)
        if not args.root:
            start = time.perf_counter()
            write_shapes_voc(root, num_train=args.num_images, num_val=0, image_size=(375, 500), seed=0)
            print(f"wrote {args.num_images} scenes of 375..500 px: "
                  f"{1000 * (time.perf_counter() - start) / args.num_images:.1f} ms per image")
        samples = voc_samples(find_voc2012(root), "train")
        for workers in (1, 4):
            print(f"set-up check, {workers} thread(s): {time_check(samples, workers):.2f} ms per mask "
                  f"({len(samples)} masks)")
        dataset = SegmentationDataset(samples, train_transforms(crop_size=args.crop_size), num_classes=21,
                                      name="benchmark", check=False)
        for workers in args.workers:
            rate = time_loader(dataset, batch_size=args.batch_size, workers=workers, batches=args.batches)
            print(f"train loader, crop {args.crop_size}, batch {args.batch_size}, {workers} workers: "
                  f"{rate:.1f} images/s")


if __name__ == "__main__":
    main()
