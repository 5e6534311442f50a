"""Detection speed on this machine: SSDLite training throughput vs torchvision, COCO evaluation backends.

    python -m benchmarks.detection_train [--batch-size 8] [--size 320] [--iters 6] [--threads N]

1. Training images/s (forward + loss + backward + SGD step) at 320x320 on the CPU: our SSDLite-MobileNetV2
   (80 classes) against torchvision's ``ssdlite320_mobilenet_v3_large`` (91 classes, random init, its training
   forward with targets, which includes its own resize/normalise transform), in the same process.
2. COCO bbox evaluation time of pycocotools vs faster-coco-eval on the generated shapes val set with
   detector-like predictions (jittered ground truth, class swaps and false positives, 100 per image).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from mobilenetv2_dense.datasets.detection.shapes import write_shapes_coco
from mobilenetv2_dense.heads.loss import SSDLoss
from mobilenetv2_dense.models.ssdlite import ssdlite320_mobilenet_v2
from mobilenetv2_dense.tasks.detection.evaluation import evaluate_coco


def random_targets(batch_size: int, size: int, generator: torch.Generator, num_classes: int) -> list[dict]:
    """1-5 boxes per image, 10-60% of the side, labels in 1..num_classes."""
    targets = []
    for _ in range(batch_size):
        count = int(torch.randint(1, 6, (1,), generator=generator))
        wh = torch.rand(count, 2, generator=generator) * 0.5 * size + 0.1 * size
        xy = torch.rand(count, 2, generator=generator) * (size - wh)
        labels = torch.randint(1, num_classes + 1, (count,), generator=generator)
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1), "labels": labels})
    return targets


def images_per_second(steps: dict[str, Callable[[], None]], batch_size: int, iters: int,
                      warmup: int = 2) -> dict[str, float]:
    """Images/s of each step function from its fastest iteration; the steps alternate, so load from other
    processes on a shared machine hits both alike and the ratio stays meaningful."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(iters):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: batch_size / seconds for name, seconds in best.items()}


def train_throughput(batch_size: int, size: int, iters: int) -> dict[str, float]:
    """Training images/s of ours in NCHW and in channels_last (the configs' ``channels_last: true``) and of
    torchvision's model, keys ``ours``, ``ours_channels_last``, ``theirs``."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, size, size, generator=generator)
    targets = random_targets(batch_size, size, generator, num_classes=80)
    criterion = SSDLoss()

    def our_step(memory_format: torch.memory_format) -> Callable[[], None]:
        model = ssdlite320_mobilenet_v2(num_classes=80).train().to(memory_format=memory_format)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        batch = images.contiguous(memory_format=memory_format)

        def step() -> None:
            losses = criterion(model(batch), targets, model.box_coder)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
        return step

    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91).train()
    theirs_opt = torch.optim.SGD(theirs.parameters(), lr=1e-3, momentum=0.9)
    image_list = list(images)

    def theirs_step() -> None:
        losses = theirs(image_list, targets)
        theirs_opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        theirs_opt.step()

    steps = {"ours": our_step(torch.contiguous_format), "ours_channels_last": our_step(torch.channels_last),
             "theirs": theirs_step}
    return images_per_second(steps, batch_size, iters)


def fake_predictions(gt: dict, per_image: int = 100, seed: int = 0) -> list[dict]:
    """Detector-like results: every object found with jitter (10% wrong class), the rest random boxes."""
    rng = np.random.default_rng(seed)
    category_ids = [c["id"] for c in gt["categories"]]
    by_image: dict[int, list[dict]] = {image["id"]: [] for image in gt["images"]}
    for ann in gt["annotations"]:
        by_image[ann["image_id"]].append(ann)
    sizes = {image["id"]: (image["width"], image["height"]) for image in gt["images"]}
    results = []
    for image_id, anns in by_image.items():
        width, height = sizes[image_id]
        for ann in anns:
            x, y, w, h = ann["bbox"]
            dx, dy, dw, dh = rng.normal(0, 0.08, size=4) * [w, h, w, h]
            category = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(category_ids))
            results.append({"image_id": image_id, "category_id": category, "score": float(rng.uniform(0.3, 1)),
                            "bbox": [x + dx, y + dy, max(1.0, w + dw), max(1.0, h + dh)]})
        count = per_image - len(anns)
        xy = rng.uniform(0, 0.8, size=(count, 2)) * [width, height]
        wh = rng.uniform(0.05, 0.4, size=(count, 2)) * [width, height]
        for (x, y), (w, h), score, category in zip(xy, wh, rng.uniform(0.01, 0.5, size=count),
                                                   rng.choice(category_ids, size=count)):
            results.append({"image_id": image_id, "category_id": int(category), "score": float(score),
                            "bbox": [float(x), float(y), float(w), float(h)]})
    return results


def eval_times(num_val: int, repeats: int) -> dict[str, float]:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        root = write_shapes_coco(Path(tmp) / "shapes_coco", num_train=0, num_val=num_val, image_size=320, seed=0)
        gt_path = Path(root) / "annotations" / "instances_val2017.json"
        gt = json.loads(gt_path.read_text())
    results = fake_predictions(gt)
    print(f"COCO eval: {len(gt['images'])} images, {len(gt['annotations'])} objects, {len(results)} detections")
    times, metrics = {}, {}
    for backend in ("pycocotools", "faster_coco_eval"):
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            metrics[backend] = evaluate_coco(gt, results, backend=backend, verbose=False)
            runs.append(time.perf_counter() - start)
        times[backend] = min(runs)
    same = all(abs(metrics["pycocotools"][k] - metrics["faster_coco_eval"][k]) < 1e-12 for k in metrics["pycocotools"])
    print(f"  mAP {metrics['faster_coco_eval']['map']:.4f}; identical metrics from both backends: {same}")
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--num-val", type=int, default=500, help="generated val images for the COCO eval timing")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    speed = train_throughput(args.batch_size, args.size, args.iters)
    ours, ours_nhwc, theirs = speed["ours"], speed["ours_channels_last"], speed["theirs"]
    print(f"training at {args.size}x{args.size}, batch {args.batch_size} (forward + loss + backward + SGD step; "
          f"fastest of {args.iters} alternating iterations):")
    print(f"  SSDLite-MobileNetV2 (ours)                 {ours:7.2f} images/s")
    print(f"  ours, channels_last                        {ours_nhwc:7.2f} images/s")
    print(f"  torchvision ssdlite320_mobilenet_v3_large  {theirs:7.2f} images/s")
    print(f"  ratio ours / torchvision                   {ours / theirs:7.2f}")
    print(f"  ratio ours channels_last / ours NCHW       {ours_nhwc / ours:7.2f}")

    times = eval_times(args.num_val, args.repeats)
    print(f"  pycocotools       {times['pycocotools']:.3f} s")
    print(f"  faster-coco-eval  {times['faster_coco_eval']:.3f} s")
    print(f"  speed-up          {times['pycocotools'] / times['faster_coco_eval']:.1f}x")


if __name__ == "__main__":
    main()
