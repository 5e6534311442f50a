"""Detection learning side by side: our SSDLite-MobileNetV2 and torchvision's ``ssdlite320_mobilenet_v3_large``
trained on the same generated COCO-format data with one recipe, scored by pycocotools on the same images.

    python -m benchmarks.train_vs_peers [--sets shapes clutter] [--models ours torchvision] [--epochs 24]
        [--width_mult 1.0] [--threads 2] [--output runs/train_vs_peers/result.json]
    python -m benchmarks.train_vs_peers --report runs/train_vs_peers/*.json     # tables from saved runs

Both detectors start from random weights and see the same batches: one data loader (our COCO reader and SSD
augmentation, horizontal flip only by default) yields ``[0, 1]`` images, and each model normalises them its own way
(ours: ImageNet mean / std, torchvision: ``[-1, 1]`` inside its transform). The recipe is one
:class:`mobilenetv2_dense.tasks.optim.Optimization` (AdamW, lr 0.003, weight decay 1e-4 off norms and biases, cosine
with a half-epoch warm-up, per-step). Evaluation: both post-process with the same score threshold, NMS IoU, top-k
and detections per image; boxes go back to original pixels and pycocotools scores them.

The sets (written under ``data/train_vs_peers/`` on first use, in the real COCO layout):

- ``shapes``: the detection demo's generator (4 classes, 0-5 objects of 10-50 % of the side), 400 train / 80 val;
- ``clutter``: up to 12 objects of 4-22 % of the side on the same backgrounds, 400 / 80: small objects and crowded
  scenes, where the lowest feature map and its default boxes matter most.

``--models`` takes ``torchvision``, ``torchvision+mnv2`` (torchvision's SSD on our MobileNetV2: the backbone swapped
alone) and our variants in :data:`VARIANTS`: ``ours`` (the defaults), ``paper`` (the paper's anchors and matching on
a He-initialised backbone: this project's defaults before this benchmark) and ablation steps from ``paper``
towards torchvision's parts. The results and what they show are in ``docs/benchmarks/train_vs_peers.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from mobilenetv2_dense.datasets.detection.coco import COCODetection
from mobilenetv2_dense.datasets.detection.dataset import detection_collate
from mobilenetv2_dense.datasets.detection.shapes import MARKER, write_shapes_coco
from mobilenetv2_dense.datasets.detection.transforms import DetectionAugment, DetectionTransform, ssd_augmentation
from mobilenetv2_dense.datasets.images import IMAGENET_MEAN, IMAGENET_STD
from mobilenetv2_dense.heads.anchors import AnchorSettings
from mobilenetv2_dense.heads.loss import SSDLoss
from mobilenetv2_dense.heads.postprocess import PostProcessing
from mobilenetv2_dense.models.ssdlite import ssdlite320_mobilenet_v2
from mobilenetv2_dense.tasks.detection.anchors import fit_model_anchors
from mobilenetv2_dense.tasks.detection.evaluation import detections_to_array, evaluate_coco, scale_to_original
from mobilenetv2_dense.tasks.optim import Optimization, build_optimizer, build_scheduler

from .common import learning_options, print_table, read_results, write_results

SETS = {
    "shapes": dict(max_objects=5, object_size=(0.1, 0.5)),
    "clutter": dict(max_objects=12, object_size=(0.04, 0.22)),
}

# Post-processing shared by every model at evaluation (our SSDLite's defaults).
SCORE_THRESH, NMS_THRESH, DETECTIONS, TOPK = 0.01, 0.45, 100, 300
POST_PROCESSING = PostProcessing(score_thresh=SCORE_THRESH, nms_thresh=NMS_THRESH, detections_per_img=DETECTIONS,
                                 topk_candidates=TOPK)

# Our SSDLite's variants: model kwargs, loss kwargs, input normalisation and anchor fitting, changed one part at a
# time from "paper" (this project's defaults before this benchmark) towards torchvision's.
KAIMING = dict(backbone_init="kaiming")
TV_ANCHORS = AnchorSettings(reduce_boxes_in_lowest_layer=False)  # 6 boxes on the lowest map, as torchvision's
VARIANTS: dict[str, dict] = {
    # the defaults: N(0, 0.03) backbone init, anchors fitted to the data, anchors matched at IoU >= 0.4
    "ours": dict(fit_anchors=True, loss=dict(iou_threshold=0.4)),
    # TF's anchors matched at IoU 0.5 on a He-initialised backbone (torchvision's classification init)
    "paper": dict(model=KAIMING),
    "paper+normal_init": dict(),
    "paper+tv_anchors": dict(model=dict(**KAIMING, anchors=TV_ANCHORS)),
    "paper+tv_input": dict(model=KAIMING, normalize="minus_one_one"),
    "paper+no_min_negatives": dict(model=KAIMING, loss=dict(min_negatives_per_image=0)),
    "paper+fit_anchors": dict(model=KAIMING, fit_anchors=True),
    "normal_init+tv_anchors": dict(model=dict(anchors=TV_ANCHORS)),
    "normal_init+lowest_0.2": dict(model=dict(anchors=AnchorSettings(
        lowest_layer_boxes=((0.2, 1.0), (0.2, 2.0), (0.2, 0.5))))),
    "normal_init+fit_anchors": dict(fit_anchors=True),
    "normal_init+fit_anchors+focal": dict(model=dict(classification="focal"), loss=dict(classification="focal"),
                                          fit_anchors=True),
    # every torchvision part but its backbone
    "tv_all": dict(model=dict(anchors=TV_ANCHORS), clip_anchors=True, normalize="minus_one_one",
                   loss=dict(min_negatives_per_image=0)),
}


@dataclass
class Recipe:
    """One training recipe for every model of a run."""

    epochs: int = 24
    batch_size: int = 16
    image_size: int = 192
    optimization: Optimization = field(default_factory=lambda: Optimization(
        optimizer="adamw", lr=0.003, weight_decay=1e-4, schedule="cosine", warmup_epochs=0.5))
    augment: DetectionAugment = field(default_factory=lambda: DetectionAugment(
        photometric=False, max_zoom=1.0, min_iou_crop=False, hflip=True))


def write_set(name: str, root: Path, num_train: int, num_val: int) -> Path:
    """The generated set ``name`` under ``root / name`` (written once)."""
    path = root / name
    if not (path / MARKER).is_file():
        write_shapes_coco(path, num_train=num_train, num_val=num_val, image_size=320, seed=0, **SETS[name])
    return path


def loaders(root: Path, recipe: Recipe, workers: int, seed: int
            ) -> tuple[DataLoader, DataLoader, COCODetection, COCODetection]:
    """Train and val loaders of ``[0, 1]`` images ``(N, 3, S, S)`` with targets in input pixels."""
    unit = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # x / 255: each model normalises its own way
    train_tf = DetectionTransform(ssd_augmentation(image_size=recipe.image_size, mean=IMAGENET_MEAN,
                                                   augment=recipe.augment), **unit)
    train_tf.set_random_seed(seed)
    eval_tf = DetectionTransform([A.Resize(recipe.image_size, recipe.image_size)], **unit)
    train = COCODetection(root / "train2017", root / "annotations" / "instances_train2017.json", transform=train_tf)
    val = COCODetection(root / "val2017", root / "annotations" / "instances_val2017.json", transform=eval_tf)
    generator = torch.Generator().manual_seed(seed)
    # persistent workers: each worker's flip stream is seeded once, from torch's worker seed (see _seed_worker)
    train_loader = DataLoader(train, batch_size=recipe.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                              collate_fn=detection_collate, generator=generator, persistent_workers=workers > 0,
                              worker_init_fn=_seed_worker)
    val_loader = DataLoader(val, batch_size=32, num_workers=workers, collate_fn=detection_collate)
    return train_loader, val_loader, train, val


def _seed_worker(worker_id: int) -> None:
    # What datasets/seeding.py's seed_worker does, without its rank mixing; the docs page's digits were made with it.
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_seed(info.seed % 2**31)


class Detector:
    """A model under test: ``loss(images, targets) -> Tensor`` and ``detect(images) -> [{"boxes", "scores",
    "labels"}]`` in input pixels, ``images`` ``(N, 3, S, S)`` in ``[0, 1]``."""

    model: nn.Module
    loss: Callable[[Tensor, list[dict]], Tensor]
    detect: Callable[[Tensor], list[dict]]


class Ours(Detector):
    """Our SSDLite with :class:`mobilenetv2_dense.heads.loss.SSDLoss`; ``channels_last`` as the configs train it."""

    def __init__(self, num_classes: int, width_mult: float, variant: dict, channels_last: bool) -> None:
        self.model = ssdlite320_mobilenet_v2(num_classes=num_classes, width_mult=width_mult,
                                             post_processing=POST_PROCESSING, **variant.get("model", {}))
        if variant.get("clip_anchors"):
            self.model.anchors = _clipped(self.model.anchors)
        self.criterion = SSDLoss(**variant.get("loss", {}))
        mean, std = ((0.5,) * 3, (0.5,) * 3) if variant.get("normalize") == "minus_one_one" else (IMAGENET_MEAN,
                                                                                                  IMAGENET_STD)
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)

    def inputs(self, images: Tensor) -> Tensor:
        return ((images - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def loss(self, images: Tensor, targets: list[dict]) -> Tensor:
        return self.criterion(self.model(self.inputs(images)), targets, self.model.box_coder)["loss"]

    def detect(self, images: Tensor) -> list[dict]:
        return self.model.predict(self.inputs(images))


def _clipped(anchors: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Anchors no wider or taller than the image, as torchvision's ``DefaultBoxGenerator(clip=True)``."""
    def clipped(image_size: tuple[int, int], *args, **kwargs) -> Tensor:
        boxes = anchors(image_size, *args, **kwargs)
        centres, sizes = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
        sizes = torch.minimum(sizes, sizes.new_tensor([image_size[1], image_size[0]]))
        return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    return clipped


class Torchvision(Detector):
    """torchvision's ``ssdlite320_mobilenet_v3_large`` (its anchors, matcher, loss, init), resized to the recipe's
    input instead of 320 and post-processing with the shared settings."""

    def __init__(self, num_classes: int, image_size: int) -> None:
        self.model = ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=num_classes + 1, score_thresh=SCORE_THRESH,
            nms_thresh=NMS_THRESH, detections_per_img=DETECTIONS, topk_candidates=TOPK)
        self.model.transform = GeneralizedRCNNTransform(image_size, image_size, [0.5] * 3, [0.5] * 3,
                                                        size_divisible=1, fixed_size=(image_size, image_size))

    def loss(self, images: Tensor, targets: list[dict]) -> Tensor:
        losses = self.model(list(images), [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        return sum(losses.values())

    def detect(self, images: Tensor) -> list[dict]:
        return self.model(list(images))


class TorchvisionOnMobileNetV2(Torchvision):
    """torchvision's SSD (its anchors, matcher, loss, head, transform and init) on our MobileNetV2 taps and extra
    layers instead of MobileNetV3: the backbone swapped alone."""

    def __init__(self, num_classes: int, image_size: int, width_mult: float) -> None:
        ours = ssdlite320_mobilenet_v2(num_classes=1, width_mult=width_mult, backbone_init="normal")
        features = _Features(ours)
        size = (image_size, image_size)
        anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
        head = SSDLiteHead(_map_channels(ours), anchors.num_anchors_per_location(), num_classes + 1,
                           partial(nn.BatchNorm2d, eps=0.001, momentum=0.03))
        self.model = SSD(features, anchors, size, num_classes + 1, head=head, image_mean=[0.5] * 3,
                         image_std=[0.5] * 3, score_thresh=SCORE_THRESH, nms_thresh=NMS_THRESH,
                         detections_per_img=DETECTIONS, topk_candidates=TOPK)
        self.model.transform = GeneralizedRCNNTransform(image_size, image_size, [0.5] * 3, [0.5] * 3,
                                                        size_divisible=1, fixed_size=size)


def _map_channels(model: nn.Module) -> list[int]:
    """Channels of the six maps of our SSDLite: the two taps, then the extra layers."""
    taps = model.backbone.out_feature_info.channels()
    return [*taps, *(block[-1].out_channels for block in model.head.extra)]


class _Features(nn.Module):
    """Our backbone taps + extra layers as torchvision's SSD wants them: ``{"0": map, "1": ...}``."""

    def __init__(self, ours: nn.Module) -> None:
        super().__init__()
        self.backbone, self.extra = ours.backbone, ours.head.extra

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        maps = list(self.backbone(x).values())
        for block in self.extra:
            maps.append(block(maps[-1]))
        return {str(i): m for i, m in enumerate(maps)}


PEERS = ("torchvision", "torchvision+mnv2")


def build(name: str, train: COCODetection, width_mult: float, image_size: int, channels_last: bool) -> Detector:
    if name not in PEERS and name not in VARIANTS:
        raise SystemExit(f"train_vs_peers: unknown model {name!r}; choose from {', '.join([*PEERS, *VARIANTS])}")
    num_classes = len(train.class_names)
    if name == "torchvision":
        return Torchvision(num_classes, image_size)
    if name == "torchvision+mnv2":
        return TorchvisionOnMobileNetV2(num_classes, image_size, width_mult)
    detector = Ours(num_classes, width_mult, VARIANTS[name], channels_last)
    if VARIANTS[name].get("fit_anchors"):  # as DetectionTask(fit_anchors=True) does at the start of fit
        size = (image_size, image_size)
        print("  " + fit_model_anchors(detector.model, train.resized_boxes(size), size).text().replace("\n", "\n  "))
    if VARIANTS[name].get("model", {}).get("classification") == "focal":
        detector.model.head.set_class_prior(0.01)
    return detector


@torch.no_grad()
def evaluate(detector: Detector, loader: DataLoader, val: COCODetection, image_size: int) -> dict[str, float]:
    detector.model.eval()
    arrays = []
    for images, targets in loader:
        detections = scale_to_original(detector.detect(images), (image_size, image_size),
                                       [t["orig_size"] for t in targets])
        arrays.append(detections_to_array(detections, [t["image_id"] for t in targets], val.label_to_cat_id))
    metrics = evaluate_coco(val.coco, np.concatenate(arrays), backend="pycocotools")
    detector.model.train()
    return metrics


def train(name: str, root: Path, recipe: Recipe, *, width_mult: float, seed: int, workers: int,
          eval_epochs: set[int], channels_last: bool) -> dict:
    """Train one model; returns ``{"model", "epochs": [{"epoch", "map", "map_50", "train_s"}], "train_s"}``."""
    torch.manual_seed(seed)
    train_loader, val_loader, train_set, val = loaders(root, recipe, workers, seed)
    detector = build(name, train_set, width_mult, recipe.image_size, channels_last)
    optimizer = build_optimizer(detector.model, recipe.optimization)
    steps = len(train_loader)
    scheduler = build_scheduler(optimizer, recipe.optimization, total_steps=recipe.epochs * steps,
                                steps_per_epoch=steps)
    detector.model.train()
    history, train_seconds = [], 0.0
    for epoch in range(1, recipe.epochs + 1):
        start = time.perf_counter()
        for images, targets in train_loader:
            loss = detector.loss(images, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        train_seconds += time.perf_counter() - start
        if epoch in eval_epochs or epoch == recipe.epochs:
            metrics = evaluate(detector, val_loader, val, recipe.image_size)
            history.append({"epoch": epoch, "map": metrics["map"], "map_50": metrics["map_50"],
                            "train_s": round(train_seconds, 1)})
            print(f"  {name:>24} epoch {epoch:3d}: mAP {metrics['map']:.3f}  AP50 {metrics['map_50']:.3f}  "
                  f"loss {loss.item():.3f}  train {train_seconds:6.0f} s", flush=True)
    return {"model": name, "epochs": history, "train_s": round(train_seconds, 1)}


def report(results: list[dict]) -> None:
    """One table per set: mAP / AP50 per evaluated epoch with the training seconds so far (for comparisons at equal
    wall time), a column per model."""
    for set_name in dict.fromkeys(r["set"] for r in results):
        runs = [r for r in results if r["set"] == set_name]
        names = [f"{r['model']} (seed {r['seed']})" for r in runs]
        epochs = sorted({e["epoch"] for r in runs for e in r["epochs"]})
        rows = []
        for epoch in epochs:
            cells = []
            for r in runs:
                row = next((e for e in r["epochs"] if e["epoch"] == epoch), None)
                cells.append(f"{row['map']:.3f} / {row['map_50']:.3f} ({row['train_s']:.0f} s)" if row else "")
            rows.append((epoch, *cells))
        print_table(f"{set_name}: mAP / AP50 (pycocotools) and training seconds so far, width {runs[0]['width_mult']}, "
                    f"{runs[0]['recipe']}", rows, ("epoch", *names))


def main(argv: list[str] | None = None) -> None:
    parser = learning_options(__doc__, epochs=24, eval_every=3, num_train=400, num_val=80,
                              data_root="data/train_vs_peers",
                              channels_last_help="train ours in NHWC memory, as the configs do (torchvision's model "
                                                 "as it ships)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--models", nargs="+", default=["ours", "torchvision"], choices=[*PEERS, *VARIANTS])
    parser.add_argument("--width_mult", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.report:
        report(read_results(args.report))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = Recipe(epochs=args.epochs)
    eval_epochs = set(range(args.eval_every, args.epochs + 1, args.eval_every))
    results, start = [], time.perf_counter()
    for set_name in args.sets:
        root = write_set(set_name, Path(args.data_root), args.num_train, args.num_val)
        for name in args.models:
            print(f"{set_name}: training {name} for {recipe.epochs} epochs ({torch.get_num_threads()} threads)")
            run = train(name, root, recipe, width_mult=args.width_mult, seed=args.seed, workers=args.workers,
                        eval_epochs=eval_epochs, channels_last=args.channels_last)
            results.append({**run, "set": set_name, "seed": args.seed, "width_mult": args.width_mult,
                            "recipe": f"{recipe.epochs} epochs, batch {recipe.batch_size}, {recipe.image_size} px, "
                                      f"{recipe.optimization.optimizer} lr {recipe.optimization.lr}"})
            write_results(args.output, results)
    report(results)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
