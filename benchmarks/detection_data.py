"""Detection data speed: writing the generated COCO dataset, the set-up check, training loader images/s.

    python -m benchmarks.detection_data                          # generated shapes (1,500 / 200 at 320) in a temp dir
    python -m benchmarks.detection_data --root data/coco         # a real COCO 2017 tree (its train2017 split)

Training batches go through the full SSD augmentation (photometric distortion, zoom out up to 4x, min-IoU crop,
flip, resize to 320, normalise) and ``detection_collate``, with 0, 1 and 2 DataLoader workers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks.common import print_table
from mobilenetv2_dense.datasets.detection.coco import COCODetection
from mobilenetv2_dense.datasets.detection.dataset import detection_collate
from mobilenetv2_dense.datasets.detection.shapes import write_shapes_coco
from mobilenetv2_dense.datasets.detection.transforms import eval_transform, train_transform
from mobilenetv2_dense.datasets.seeding import seed_worker


def loader_speed(dataset: COCODetection, *, workers: int, batch_size: int, batches: int) -> float:
    """Images/s over ``batches`` batches, after one warm-up batch (which pays for starting the workers)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        collate_fn=detection_collate, worker_init_fn=seed_worker, drop_last=True)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
    return batches * len(images) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="a COCO 2017 tree; default: write generated shapes to a temp folder")
    parser.add_argument("--num-train", type=int, default=1500)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads of the main process (workers use "
                        "1); on an oversubscribed CPU, 2+ threads make the 0-worker collate several times slower")
    args = parser.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "shapes"
        rows = []
        if not args.root:
            start = time.perf_counter()
            write_shapes_coco(root, num_train=args.num_train, num_val=args.num_val, image_size=args.image_size)
            seconds = time.perf_counter() - start
            count = args.num_train + args.num_val
            rows.append(("write generated COCO", f"{count} images", f"{seconds:.1f} s", f"{count / seconds:.0f}/s"))
        start = time.perf_counter()
        dataset = COCODetection(root / "train2017", root / "annotations" / "instances_train2017.json")
        seconds = time.perf_counter() - start
        rows.append(("set-up check (json + headers + boxes)", f"{len(dataset)} images", f"{seconds:.2f} s",
                     f"{1000 * seconds / len(dataset):.2f} ms/image"))
        for name, transform in (("train (SSD augmentation)", train_transform(image_size=args.image_size)),
                                ("eval (resize + normalise)", eval_transform(image_size=args.image_size))):
            dataset.transform = transform
            for workers in args.workers if name.startswith("train") else [0]:
                speed = loader_speed(dataset, workers=workers, batch_size=args.batch_size, batches=args.batches)
                rows.append((f"loader, {name}", f"{workers} workers", f"batch {args.batch_size}",
                             f"{speed:.0f} images/s"))
        title = f"Detection data at {args.image_size}x{args.image_size}, torch threads {torch.get_num_threads()}"
        print_table(title, rows, ("step", "size", "time", "rate"))


if __name__ == "__main__":
    main()
