"""GPU training throughput: SSDLite and DeepLabv3-lite against their peers, fp32 / AMP fp16 / AMP bf16, NCHW / NHWC.

    python -m benchmarks.gpu_training [--det-batch 32] [--seg-batch 16] [--steps 10]

Each step is forward + loss + backward + SGD step, timed with CUDA synchronisation; the contenders alternate
step by step and the median step is reported, with the ratio to the peer in the same precision:
- SSDLite-MobileNetV2 320 (ours, 80 classes, our SSD loss) vs torchvision ``ssdlite320_mobilenet_v3_large``
  (91 classes, its own training forward, transform included);
- DeepLabv3-lite MobileNetV2 512 crop (ours) vs smp ``DeepLabV3Plus(encoder_name="mobilenet_v2")``.
AMP is ``torch.autocast`` with a ``GradScaler`` for fp16, exactly what Lightning's ``16-mixed`` does.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import segmentation_models_pytorch as smp
import torch
from torch.nn import functional as F
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from benchmarks.common import print_table
from mobilenetv2_dense.datasets.segmentation.voc import IGNORE_INDEX
from mobilenetv2_dense.heads.loss import SSDLoss
from mobilenetv2_dense.models.deeplab import deeplabv3_mobilenet_v2
from mobilenetv2_dense.models.ssdlite import ssdlite320_mobilenet_v2

PRECISIONS = {"fp32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def random_targets(batch: int, size: int, generator: torch.Generator, device: torch.device) -> list[dict]:
    """1-5 boxes per image, 10-60% of the side, labels in 1..80."""
    targets = []
    for _ in range(batch):
        count = int(torch.randint(1, 6, (1,), generator=generator))
        wh = torch.rand(count, 2, generator=generator) * 0.5 * size + 0.1 * size
        xy = torch.rand(count, 2, generator=generator) * (size - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, 81, (count,), generator=generator).to(device)})
    return targets


def make_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], precision: str) -> Callable[[], None]:
    """One training step in ``precision``: autocast for the forward and loss, a GradScaler for fp16."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype) if dtype else nullcontext():
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def median_step_seconds(steps: dict[str, Callable[[], None]], iters: int, warmup: int = 3) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + iters):
        for name, step in steps.items():  # interleaved: clock and load changes hit every contender alike
            torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def detection_steps(batch: int, precision: str, device: torch.device) -> dict[str, Callable[[], None]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, 320, 320, generator=generator).to(device)
    targets = random_targets(batch, 320, generator, device)
    criterion = SSDLoss()
    steps = {}
    for name, memory_format in (("ours NCHW", torch.contiguous_format), ("ours NHWC", torch.channels_last)):
        model = ssdlite320_mobilenet_v2(num_classes=80).to(device).train().to(memory_format=memory_format)
        batch_images = images.contiguous(memory_format=memory_format)
        steps[name] = make_step(model, lambda m=model, x=batch_images: criterion(m(x), targets, m.box_coder)["loss"],
                                precision)
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91).to(device).train()
    image_list = list(images)
    steps["torchvision ssdlite320_mobilenet_v3_large"] = make_step(
        theirs, lambda: sum(theirs(image_list, targets).values()), precision)
    return steps


def segmentation_steps(batch: int, precision: str, device: torch.device) -> dict[str, Callable[[], None]]:
    images = torch.randn(batch, 3, 512, 512, device=device)
    masks = torch.randint(0, 21, (batch, 512, 512), device=device)
    masks[:, :8] = IGNORE_INDEX
    steps = {}
    for name, memory_format in (("ours NCHW", torch.contiguous_format), ("ours NHWC", torch.channels_last)):
        model = deeplabv3_mobilenet_v2(num_classes=21, head="lite").to(device).train().to(memory_format=memory_format)
        x = images.contiguous(memory_format=memory_format)
        steps[name] = make_step(model, lambda m=model, x=x: F.cross_entropy(
            m(x)["out"].float(), masks, ignore_index=IGNORE_INDEX), precision)
    theirs = smp.DeepLabV3Plus(encoder_name="mobilenet_v2", encoder_weights=None, classes=21,
                               encoder_output_stride=16).to(device).train()
    steps["smp DeepLabV3Plus mobilenet_v2"] = make_step(theirs, lambda: F.cross_entropy(
        theirs(images).float(), masks, ignore_index=IGNORE_INDEX), precision)
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--det-batch", type=int, default=32)
    parser.add_argument("--seg-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per contender")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu_training.py needs a CUDA device; benchmarks/detection_train.py and "
                         "benchmarks/segmentation_train.py measure the CPU")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True  # what Lightning's `benchmark: true` sets: fixed input shapes here
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    for task, build, batch, peer in (
            ("SSDLite 320", detection_steps, args.det_batch, "torchvision ssdlite320_mobilenet_v3_large"),
            ("DeepLabv3-lite 512", segmentation_steps, args.seg_batch, "smp DeepLabV3Plus mobilenet_v2")):
        for precision in PRECISIONS:  # one table per precision, printed as soon as it is measured
            seconds = median_step_seconds(build(batch, precision, device), args.steps)
            rows = [(name, f"{value * 1e3:.1f}", f"{batch / value:.0f}", f"{seconds[peer] / value:.2f}x")
                    for name, value in seconds.items()]
            print_table(f"{task} training, {precision}, batch {batch}, median of {args.steps} interleaved steps",
                        rows, ("model", "ms/step", "images/s", "speed vs peer"))
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
