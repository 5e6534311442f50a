"""Training throughput of the segmentation networks: images/s of forward + loss + backward + optimiser step.

Compares, in one process and on the same inputs, this project's DeepLabv3 on MobileNetV2 (lite head, ASPP head,
ASPP + DeepLabv3+ decoder) with segmentation_models_pytorch's ``DeepLabV3Plus(encoder_name="mobilenet_v2")``
(random weights; nothing downloads). Steps of the models are interleaved, so a machine whose load changes during
the run slows every model alike; the median step time is reported, and ratios against smp.

    python -m benchmarks.segmentation_train                      # 512 crop, batch 4, CPU
    python -m benchmarks.segmentation_train --device cuda --batch 16 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from benchmarks.common import print_table
from mobilenetv2_dense.backbone.complexity import count_parameters
from mobilenetv2_dense.datasets.segmentation.voc import IGNORE_INDEX
from mobilenetv2_dense.models.deeplab import deeplabv3_mobilenet_v2


class SmpAdapter(nn.Module):
    """smp's models return a tensor; this returns ``{"out": tensor}`` like our ``DeepLabV3``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"out": self.model(images)}


def builders(num_classes: int) -> dict[str, Callable[[], nn.Module]]:
    return {
        "deeplabv3-lite (ours)": lambda: deeplabv3_mobilenet_v2(num_classes=num_classes, head="lite"),
        "deeplabv3-aspp (ours)": lambda: deeplabv3_mobilenet_v2(num_classes=num_classes, head="aspp"),
        "deeplabv3+-aspp (ours)": lambda: deeplabv3_mobilenet_v2(num_classes=num_classes, head="aspp", decoder=True),
        "smp DeepLabV3Plus mobilenet_v2": lambda: SmpAdapter(smp.DeepLabV3Plus(
            encoder_name="mobilenet_v2", encoder_weights=None, classes=num_classes, encoder_output_stride=16)),
    }


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, masks: Tensor) -> float:
    """One step; returns its wall time in seconds (synchronised on CUDA)."""
    if images.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = F.cross_entropy(model(images)["out"], masks, ignore_index=IGNORE_INDEX)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if images.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    masks = torch.randint(0, args.num_classes, (args.batch, args.crop, args.crop), device=device)
    masks[:, :8] = IGNORE_INDEX

    models, optimizers, times = {}, {}, {}
    for name, build in builders(args.num_classes).items():
        models[name] = build().to(device).train()
        optimizers[name] = torch.optim.SGD(models[name].parameters(), lr=0.007, momentum=0.9, weight_decay=4e-5)
        times[name] = []
    for step in range(args.warmup + args.steps):
        for name, model in models.items():  # interleaved: load changes hit every model alike
            elapsed = train_step(model, optimizers[name], images, masks)
            if step >= args.warmup:
                times[name].append(elapsed)

    reference = statistics.median(times["smp DeepLabV3Plus mobilenet_v2"])
    rows = []
    for name, model in models.items():
        median = statistics.median(times[name])
        rows.append((name, f"{count_parameters(model) / 1e6:.2f}M", f"{median:.3f}", f"{args.batch / median:.2f}",
                     f"{reference / median:.2f}x"))
    print_table(f"training throughput (forward + loss + backward + SGD step), {args.crop}x{args.crop} crop, "
                f"batch {args.batch}, {device}, {torch.get_num_threads()} threads, median of {args.steps} steps",
                rows, ("model", "params", "s/step", "images/s", "speed vs smp"))


if __name__ == "__main__":
    main()
