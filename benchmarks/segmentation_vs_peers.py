"""Segmentation learning side by side: our DeepLabv3-lite on MobileNetV2, torchvision's
``lraspp_mobilenet_v3_large`` and segmentation-models-pytorch's ``DeepLabV3Plus("mobilenet_v2")``, trained on the
same generated VOC-layout data with one recipe and scored by one mIoU on the same validation images.

    python -m benchmarks.segmentation_vs_peers [--models ours lraspp smp] [--epochs 16] [--eval_every 2]
        [--threads 2] [--output runs/segmentation_vs_peers/result.json]
    python -m benchmarks.segmentation_vs_peers --report runs/segmentation_vs_peers/*.json   # tables from saved runs

Every model starts from random weights and sees the same batches: one loader (the segmentation demo's
:class:`mobilenetv2_dense.tasks.segmentation.ShapesVOCDataModule`: 1200 train / 100 val scenes of 128-176 px,
random scale 0.75-1.5, 128 px crops, flip, ImageNet mean / std) feeds them all. The recipe is the demo's: batch 8,
cross-entropy (void ignored) + 0.5 x smp's multiclass Dice, one
:class:`mobilenetv2_dense.tasks.optim.Optimization` (AdamW lr 0.003, weight decay 1e-4 off norms and biases, poly
0.9 with a half-epoch warm-up, per step). Evaluation: every validation image at its own size (smp's model needs
sides divisible by 16: its input is zero-padded and its logits cropped back), one confusion matrix over the split
(:class:`mobilenetv2_dense.tasks.segmentation.metrics.SegmentationMetrics`, as ``SegmentationTask`` scores).

``--models`` takes the peers (``lraspp``, ``smp``) and our variants in :data:`VARIANTS`: ``ours`` (the defaults) and
one-part changes of it. The results and what they show are in ``docs/benchmarks/segmentation_vs_peers.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from mobilenetv2_dense.models.deeplab import deeplabv3_mobilenet_v2
from mobilenetv2_dense.tasks.optim import Optimization, build_optimizer, build_scheduler
from mobilenetv2_dense.tasks.segmentation import ShapesVOCDataModule
from mobilenetv2_dense.tasks.segmentation.metrics import IGNORE_INDEX, SegmentationMetrics

from .common import learning_options, print_table, read_results, write_results

# Our DeepLabv3's variants: deeplabv3_mobilenet_v2 keyword arguments over the defaults of "ours".
OURS = dict(width_mult=0.5, head="lite", output_stride=16)
VARIANTS: dict[str, dict] = {
    "ours": {},
    "ours+normal_init": dict(backbone_init="normal"),
    "ours+decoder": dict(decoder=True),
    "ours+width_1.0": dict(width_mult=1.0),
    "ours+aspp": dict(head="aspp"),
    # smp's DeepLabV3Plus design (full width, ASPP, decoder on the stride-4 feature) in our implementation
    "ours+width_1.0+aspp+decoder": dict(width_mult=1.0, head="aspp", decoder=True),
}
PEERS = ("lraspp", "lraspp+bn_momentum_0.1", "smp")


@dataclass
class Recipe:
    """One training recipe for every model of a run (the segmentation demo's)."""

    epochs: int = 16
    dice_weight: float = 0.5
    optimization: Optimization = field(default_factory=lambda: Optimization(
        optimizer="adamw", lr=0.003, weight_decay=1e-4, schedule="poly", poly_power=0.9, warmup_epochs=0.5))


def datamodule(root: Path, num_train: int, num_val: int, workers: int) -> ShapesVOCDataModule:
    """The demo's data (``configs/deeplabv3lite_shapes_demo.yaml``), written under ``root`` on first use."""
    data = ShapesVOCDataModule(str(root), num_train=num_train, num_val=num_val, image_size=(128, 176),
                               crop_size=128, scale_range=(0.75, 1.5), batch_size=8, val_batch_size=20,
                               num_workers=workers)
    data.prepare_data()
    data.setup("fit")
    return data


class PaddedTo16(nn.Module):
    """smp's DeepLabV3Plus needs sides divisible by 16: zero-pad bottom / right, crop the logits back."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        h, w = images.shape[-2:]
        padded = F.pad(images, (0, -w % 16, 0, -h % 16))
        return {"out": self.model(padded)[..., :h, :w]}


def build(name: str, num_classes: int) -> nn.Module:
    """A network ``(N, 3, H, W)`` ImageNet-normalised -> ``{"out": (N, K, H, W)}`` logits."""
    if name.startswith("lraspp"):
        model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
        if name == "lraspp+bn_momentum_0.1":  # its backbone's BN statistics follow TF's 0.01; ours and smp's use 0.1
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.momentum = 0.1
        return model
    if name == "smp":
        return PaddedTo16(smp.DeepLabV3Plus(encoder_name="mobilenet_v2", encoder_weights=None, classes=num_classes,
                                            encoder_output_stride=16))
    if name not in VARIANTS:
        raise SystemExit(f"segmentation_vs_peers: unknown model {name!r}; choose from {', '.join([*PEERS, *VARIANTS])}")
    return deeplabv3_mobilenet_v2(num_classes=num_classes, **{**OURS, **VARIANTS[name]})


@torch.no_grad()
def evaluate(model: nn.Module, data: ShapesVOCDataModule, num_classes: int, memory_format: torch.memory_format
             ) -> float:
    """mIoU over the val split, each image at its own size (no padding reaches a model but smp's)."""
    model.eval()
    metrics = SegmentationMetrics(num_classes)
    for images, masks, sizes in data.val_dataloader():  # padded to the batch's largest image
        for image, mask, (h, w) in zip(images, masks, sizes):
            logits = model(image[None, :, :h, :w].contiguous(memory_format=memory_format))["out"]
            metrics.update(logits.argmax(1), mask[None, :h, :w])
    model.train()
    return float(metrics.compute()["miou"])


def train(name: str, data: ShapesVOCDataModule, recipe: Recipe, *, seed: int, eval_epochs: set[int],
          channels_last: bool) -> dict:
    """Train one model; returns ``{"model", "params", "epochs": [{"epoch", "miou", "train_s"}], "train_s"}``."""
    num_classes = data.num_classes
    torch.manual_seed(seed)
    model = build(name, num_classes)
    # ours trains in NHWC as the demo config does; the peers as they ship
    memory_format = torch.channels_last if channels_last and name in VARIANTS else torch.contiguous_format
    model.to(memory_format=memory_format).train()
    dice = DiceLoss(mode="multiclass", ignore_index=IGNORE_INDEX)
    optimizer = build_optimizer(model, recipe.optimization)
    torch.manual_seed(seed)  # the same shuffles and augmentation for every model, whatever its init drew
    loader = data.train_dataloader()
    steps = len(loader)
    scheduler = build_scheduler(optimizer, recipe.optimization, total_steps=recipe.epochs * steps,
                                steps_per_epoch=steps)
    history, train_seconds = [], 0.0
    for epoch in range(1, recipe.epochs + 1):
        start = time.perf_counter()
        for images, masks, *_ in loader:  # (images, masks[, sizes])
            logits = model(images.contiguous(memory_format=memory_format))["out"]
            loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX) + recipe.dice_weight * dice(logits, masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        train_seconds += time.perf_counter() - start
        if epoch in eval_epochs or epoch == recipe.epochs:
            miou = evaluate(model, data, num_classes, memory_format)
            history.append({"epoch": epoch, "miou": round(miou, 4), "train_s": round(train_seconds, 1)})
            print(f"  {name:>18} epoch {epoch:3d}: mIoU {miou:.3f}  loss {loss.item():.3f}  "
                  f"train {train_seconds:6.0f} s", flush=True)
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "params": params, "epochs": history, "train_s": round(train_seconds, 1)}


def report(results: list[dict]) -> None:
    """mIoU per evaluated epoch with the training seconds so far (for comparisons at equal wall time), a column per
    model, and each model's best."""
    names = [f"{r['model']} (seed {r['seed']})" for r in results]
    epochs = sorted({e["epoch"] for r in results for e in r["epochs"]})
    rows = []
    for epoch in epochs:
        cells = []
        for r in results:
            row = next((e for e in r["epochs"] if e["epoch"] == epoch), None)
            cells.append(f"{row['miou']:.3f} ({row['train_s']:.0f} s)" if row else "")
        rows.append((epoch, *cells))
    rows.append(("best", *(f"{max(e['miou'] for e in r['epochs']):.3f}" for r in results)))
    rows.append(("params", *(f"{r['params'] / 1e6:.2f}M" for r in results)))
    print_table(f"mIoU and training seconds so far, {results[0]['recipe']}", rows, ("epoch", *names))


def main(argv: list[str] | None = None) -> None:
    parser = learning_options(__doc__, epochs=16, eval_every=2, num_train=1200, num_val=100,
                              data_root="data/train_vs_peers/shapes_voc",
                              channels_last_help="train ours in NHWC memory, as the demo config does (the peers as "
                                                 "they ship)")
    parser.add_argument("--models", nargs="+", default=["ours", "lraspp", "smp"], choices=[*VARIANTS, *PEERS])
    args = parser.parse_args(argv)
    if args.report:
        report(read_results(args.report))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = Recipe(epochs=args.epochs)
    eval_epochs = set(range(args.eval_every, args.epochs + 1, args.eval_every))
    data = datamodule(Path(args.data_root), args.num_train, args.num_val, args.workers)
    results, start = [], time.perf_counter()
    for name in args.models:
        print(f"training {name} for {recipe.epochs} epochs ({torch.get_num_threads()} threads)")
        run = train(name, data, recipe, seed=args.seed, eval_epochs=eval_epochs, channels_last=args.channels_last)
        results.append({**run, "seed": args.seed,
                        "recipe": f"{recipe.epochs} epochs, batch 8, 128 px crops, "
                                  f"{recipe.optimization.optimizer} lr {recipe.optimization.lr}, "
                                  f"CE + {recipe.dice_weight} Dice"})
        write_results(args.output, results)
    report(results)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
