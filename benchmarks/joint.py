"""One trunk for two tasks: the joint SSDLite + DeepLabv3-lite model against the two single-task models.

    python -m benchmarks.joint [--size 320] [--width 1.0] [--runs 20] [--threads 1]     # (a) latency
    python -m benchmarks.joint --accuracy [--epochs 10] [--num_train 1500] [--skip_latency]   # (b) accuracy
    python -m benchmarks.joint --report a.json b.json     # (b)'s table from runs split over processes (--models,
                                                          # --seed, --epochs), with means over seeds

(a) Latency at batch 1 (random weights, nothing downloads; median of ``--runs`` interleaved calls): the joint model
(one backbone, both heads; alone and with the DeepLabv3+ decoder on the stride-4, -8 or -16 feature: ``@4``, ``@8``,
``@16``) against SSDLite followed by DeepLabv3-lite at its own output stride 16, at the same input size and width,
``--num_classes`` object classes (80 as COCO, 81 segmentation classes; 20 as VOC). Eager is the model floor end to
end (normalisation, network, the detector's decoding and NMS, the label map); ONNX Runtime runs ``export.py``'s
graphs (``JointGraph``, ``DetectorGraph``, ``SegmenterGraph``, Conv+BN folded). The ratio is the joint model's time
over the two single-task models' sum (goal: <= 0.6).

(b) Accuracy (``--accuracy``): SSDLite, DeepLabv3-lite (OS16) and the joint models of (a) are trained from scratch
on the generated shapes of the demos (``ShapesJointDataModule``: the very files of ``make demo``, COCO layout with
RLE outlines), with one recipe for all: the same loader (images, order, augmentation, input size), the same
objective (``tasks/joint/loss.py``'s ``JointLoss``, each model on the terms its outputs allow: SSD's loss,
cross-entropy + 0.5 Dice, or both), AdamW with cosine decay as the demo configs, the same epochs. Each is scored on
the 200 val images as the joint task scores them: COCO mAP of the boxes in original pixels, mIoU of the label maps
at the original size. The goal: the joint model within 1 point of each single-task model. ``--seed`` changes the
initialisation and the data order; ``--report`` pairs each run with the single-task model at its seed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import median_latency, print_table
from mobilenetv2_dense.datasets.images import IMAGENET_MEAN, IMAGENET_STD
from mobilenetv2_dense.deploy.formats import export_graph
from mobilenetv2_dense.deploy.fuse import fold_conv_bn
from mobilenetv2_dense.deploy.graph import DetectorGraph, JointGraph, Normalize, SegmenterGraph
from mobilenetv2_dense.deploy.runtime import DeployedModel, write_sidecar
from mobilenetv2_dense.heads.postprocess import PostProcessing
from mobilenetv2_dense.models import (
    SSDLite,
    deeplabv3_mobilenet_v2,
    ssdlite320_mobilenet_v2,
    ssdlite_deeplabv3_mobilenet_v2,
)

DETECTION_OUTPUTS = ["boxes", "scores", "labels", "num_detections"]
# The DeepLabv3+ decoder's feature by stride: DeepLabv3+'s stride-4 stage2, stage3, the detector's stride-16 tap.
DECODER_FEATURES = {4: "stage2", 8: "stage3", 16: "stage6_expansion"}


# ------------------------------------------------------------------------------------------------- (a) latency
def latency(*, size: int, width: float, runs: int, warmup: int, threads: int, topk: int, detections: int,
            folder: Path, num_classes: int = 80) -> list[tuple]:
    torch.manual_seed(0)
    post = dict(post_processing=PostProcessing(topk_candidates=topk, detections_per_img=detections))
    k = num_classes
    models = {"joint": ssdlite_deeplabv3_mobilenet_v2(num_classes=k, num_seg_classes=k + 1, width_mult=width, **post),
              **{f"joint + decoder@{stride}": ssdlite_deeplabv3_mobilenet_v2(
                  num_classes=k, num_seg_classes=k + 1, width_mult=width, decoder=True, decoder_feature=feature, **post)
                 for stride, feature in DECODER_FEATURES.items()},
              "SSDLite": ssdlite320_mobilenet_v2(num_classes=k, width_mult=width, **post),
              "DeepLabv3-lite OS16": deeplabv3_mobilenet_v2(num_classes=k + 1, width_mult=width, head="lite")}
    models = {name: model.eval() for name, model in models.items()}
    image = torch.rand(1, 3, size, size)
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    contenders: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        contenders[f"{name} eager"] = lambda m=model: m.predict(normalize(image))
    norm = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    example = torch.rand(2, 3, size, size)
    for name, model in models.items():
        folded = fold_conv_bn(model)
        if name.startswith("joint"):
            graph, dynamic = JointGraph(folded, (size, size), **norm), False
            outputs = [*DETECTION_OUTPUTS, "seg_logits"]
        elif isinstance(model, SSDLite):
            graph, outputs, dynamic = DetectorGraph(folded, (size, size), **norm), DETECTION_OUTPUTS, False
        else:
            graph, outputs, dynamic = SegmenterGraph(folded, **norm), ["logits"], True
        path, _ = export_graph(graph.eval(), example, folder / f"{name.replace(' ', '_')}.onnx", format="onnx",
                               output_names=outputs, dynamic_size=dynamic)
        write_sidecar(path, {"task": "timing", "outputs": [{"name": o} for o in outputs], "classes": []})
        deployed = DeployedModel(path, threads=threads)
        contenders[f"{name} onnx"] = lambda d=deployed: d(image)
    torch.set_num_threads(threads)
    timings = median_latency(contenders, runs=runs, warmup=warmup)
    rows = []
    for runtime in ("eager", "onnx"):
        apart = timings[f"SSDLite {runtime}"] + timings[f"DeepLabv3-lite OS16 {runtime}"]
        for joint in ("joint", *(f"joint + decoder@{stride}" for stride in DECODER_FEATURES)):
            ours = timings[f"{joint} {runtime}"]
            rows.append((runtime, joint, f"{ours * 1e3:.1f}", f"{timings[f'SSDLite {runtime}'] * 1e3:.1f}",
                         f"{timings[f'DeepLabv3-lite OS16 {runtime}'] * 1e3:.1f}", f"{apart * 1e3:.1f}",
                         f"{ours / apart:.2f}"))
    return rows


def full_size_ops(*, size: int, num_classes: int, runs: int, warmup: int, threads: int) -> list[tuple]:
    """The work both sides of (a) do at full size, K_seg maps from stride 16: bilinear upsampling as exported
    (NCHW) and as the eager models run it (``upsample_logits``, channels-last), then the label map."""
    from torch.nn import functional as F

    from mobilenetv2_dense.heads.deeplab import label_map, upsample_logits

    torch.set_num_threads(threads)
    low = torch.randn(1, num_classes + 1, size // 16, size // 16)
    nchw = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    nhwc = upsample_logits(low, (size, size))
    timings = median_latency({
        "upsample NCHW (F.interpolate)": lambda: F.interpolate(low, size=(size, size), mode="bilinear",
                                                               align_corners=False),
        "upsample channels-last (upsample_logits)": lambda: upsample_logits(low, (size, size)),
        "label map on NCHW": lambda: label_map(nchw),
        "label map on channels-last": lambda: label_map(nhwc),
        "argmax(1) on NCHW": lambda: nchw.argmax(1),
    }, runs=runs, warmup=warmup)
    return [(name, f"{seconds * 1e3:.1f}") for name, seconds in timings.items()]


# ------------------------------------------------------------------------------------------------ (b) accuracy
def _builders(width: float) -> dict[str, Callable[[], nn.Module]]:
    """The four models of the accuracy comparison on the shapes (4 object classes, 5 segmentation classes). Every
    backbone starts from He's init, the joint model's, so that the comparison is of the sharing alone."""
    return {
        "SSDLite": lambda: ssdlite320_mobilenet_v2(num_classes=4, width_mult=width, backbone_init="kaiming"),
        "DeepLabv3-lite OS16": lambda: deeplabv3_mobilenet_v2(num_classes=5, width_mult=width, head="lite"),
        "joint": lambda: ssdlite_deeplabv3_mobilenet_v2(num_classes=4, num_seg_classes=5, width_mult=width),
        **{f"joint + decoder@{stride}": (lambda feature=feature: ssdlite_deeplabv3_mobilenet_v2(
            num_classes=4, num_seg_classes=5, width_mult=width, decoder=True, decoder_feature=feature))
           for stride, feature in DECODER_FEATURES.items()},
    }


def train(model: nn.Module, datamodule, *, epochs: int, seed: int, log: Callable[[str], None],
          segmentation_weight: float = 1.0) -> float:
    """Train ``model`` with the demo recipe on ``datamodule``'s loader; returns the seconds it took."""
    from mobilenetv2_dense.heads.loss import SSDLoss
    from mobilenetv2_dense.tasks.joint.loss import JointLoss
    from mobilenetv2_dense.tasks.optim import Optimization, build_optimizer, build_scheduler

    torch.manual_seed(seed)
    loader = datamodule.train_dataloader()
    config = Optimization(optimizer="adamw", lr=0.003, weight_decay=1e-4, schedule="cosine", warmup_epochs=0.5)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps=epochs * len(loader), steps_per_epoch=len(loader))
    # A single-task model has one term, which the weight scales and AdamW's normalisation undoes; for the joint
    # models it sets the balance of the two tasks' gradients in the shared backbone.
    criterion = JointLoss(SSDLoss(min_negatives_per_image=3), segmentation_weight=segmentation_weight, dice_weight=0.5)
    model.to(memory_format=torch.channels_last).train()
    start = time.perf_counter()
    for epoch in range(epochs):
        total, steps = 0.0, 0
        for images, targets in loader:
            losses = criterion(model(images.contiguous(memory_format=torch.channels_last)), targets,
                               getattr(model, "box_coder", None))
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            scheduler.step()
            total, steps = total + losses["loss"].item(), steps + 1
        log(f"  epoch {epoch + 1}/{epochs}: mean loss {total / steps:.3f} ({time.perf_counter() - start:.0f} s)")
    return time.perf_counter() - start


@torch.no_grad()
def score(model: nn.Module, datamodule) -> dict[str, float]:
    """COCO mAP (boxes in original pixels) and mIoU / pixel accuracy (label maps at the original size) on the val
    split, as ``JointTask`` computes them; the metrics a model has no output for are left out."""
    from mobilenetv2_dense.tasks.detection.evaluation import detections_to_array, evaluate_coco, scale_to_original
    from mobilenetv2_dense.tasks.joint.loss import logits_by_size
    from mobilenetv2_dense.tasks.segmentation.metrics import SegmentationMetrics

    model.eval()
    arrays, image_ids = [], []
    metrics = SegmentationMetrics(datamodule.num_seg_classes)
    for images, targets in datamodule.val_dataloader():
        out = model(images.contiguous(memory_format=torch.channels_last))
        size = tuple(images.shape[-2:])
        if isinstance(model, SSDLite):
            detections = scale_to_original(model.postprocess(out, size), size, [t["orig_size"] for t in targets])
            ids = [int(t["image_id"]) for t in targets]
            arrays.append(detections_to_array(detections, ids, datamodule.label_to_cat_id))
            image_ids += ids
        if "out" in out:
            masks = [t["mask"] for t in targets]
            for members, logits in logits_by_size(out["out"], [m.shape for m in masks]):
                metrics.update(logits.argmax(1), torch.stack([masks[i] for i in members]))
    result = {}
    if arrays:
        coco = evaluate_coco(datamodule.val_coco, np.concatenate(arrays), image_ids=image_ids)
        result.update(map=coco["map"], map_50=coco["map_50"])
    if int(metrics.confmat.sum()):
        scores = metrics.compute()
        result.update(miou=100 * float(scores["miou"]), pixel_accuracy=100 * float(scores["pixel_accuracy"]))
    return result


def accuracy(args: argparse.Namespace) -> list[dict]:
    from mobilenetv2_dense.datasets.detection.transforms import DetectionAugment
    from mobilenetv2_dense.tasks.joint.datamodule import ShapesJointDataModule

    # The demos' augmentation (flip only: configs/ssdlite_shapes_demo.yaml explains why) and batch.
    augment = DetectionAugment(photometric=False, max_zoom=1.0, min_iou_crop=False, hflip=True)
    datamodule = ShapesJointDataModule(args.data_root, num_train=args.num_train, num_val=args.num_val,
                                       image_size=args.image_size, batch_size=16, num_workers=args.num_workers,
                                       pin_memory=False, augment=augment)
    datamodule.prepare_data()
    datamodule.setup("fit")
    results = []
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for name, build in _builders(args.width).items():
        if args.models and name not in args.models:
            continue
        torch.manual_seed(args.seed)
        model = build()
        print(f"{name}: training {args.epochs} epochs on {args.num_train} images at {args.image_size}", flush=True)
        seconds = train(model, datamodule, epochs=args.epochs, seed=args.seed, log=lambda line: print(line, flush=True),
                        segmentation_weight=args.segmentation_weight)
        label = name if args.segmentation_weight == 1 else f"{name}, seg. weight {args.segmentation_weight:g}"
        results.append({"model": label, "seed": args.seed, "epochs": args.epochs, "seconds": round(seconds),
                        **score(model, datamodule)})
        print(json.dumps(results[-1]), flush=True)
        output.write_text(json.dumps({"settings": vars(args), "results": results}, indent=2))
    return results


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _seed_means(results: list[dict]) -> list[dict]:
    """Per model and epochs with runs at several ``--seed`` s: one row of their means (seconds too), seeds listed."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["model"], r["epochs"]), []).append(r)
    return [{"model": f"{name}, mean", "epochs": epochs, "seed": "+".join(str(r["seed"]) for r in runs),
             "seconds": round(_mean([r["seconds"] for r in runs])),
             **{key: _mean([r.get(key) for r in runs]) for key in ("map", "miou")}}
            for (name, epochs), runs in groups.items() if len(runs) > 1]


def _accuracy_rows(results: list[dict]) -> list[tuple]:
    """One row per run (a model's epochs and seeds together, in the order the models first appear), then the mean
    of each model run at several seeds. Deltas are to the single-task model at the run's seed when there is one
    (paired: same initialisation seed and data order), else to its mean over seeds; a mean row's to the mean."""
    first = {}
    for r in results:
        first.setdefault(r["model"], len(first))
    results = sorted(results, key=lambda r: (first[r["model"]], r["epochs"], r["seed"]))
    baselines = {}  # metric -> {seed: value, "mean": value}, from the single-task model's runs at one epoch count
    for name, key in (("SSDLite", "map"), ("DeepLabv3-lite OS16", "miou")):
        runs = [r for r in results if r["model"] == name]
        runs = [r for r in runs if r["epochs"] == runs[0]["epochs"]] if runs else []
        baselines[key] = {r["seed"]: r[key] for r in runs} | ({"mean": _mean([r[key] for r in runs])} if runs else {})

    def delta(r: dict, key: str, scale: float) -> str:
        value, reference = r.get(key), baselines[key]
        base = reference.get("mean") if isinstance(r["seed"], str) else reference.get(r["seed"], reference.get("mean"))
        return "-" if value is None or base is None else f"{scale * (value - base):+.{1 if key == 'map' else 2}f}"

    rows = []
    for r in [*results, *_seed_means(results)]:
        m, i = r.get("map"), r.get("miou")
        rows.append((r["model"], str(r["epochs"]), str(r["seed"]), "-" if m is None else f"{m:.3f}",
                     delta(r, "map", 100), "-" if i is None else f"{i:.2f}", delta(r, "miou", 1),
                     f"{r['seconds']}"))
    return rows


ACCURACY_COLUMNS = ("model", "epochs", "seed", "mAP", "delta", "mIoU", "delta", "train s")


def _accuracy_title(settings: dict) -> str:
    return (f"accuracy on {settings['num_val']} val images of the shapes after the epochs shown of "
            f"{settings['num_train']} images at {settings['image_size']}, width {settings['width']} (delta: to the "
            "single-task model at the same seed, or its mean over seeds; points)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=320, help="latency: input size")
    parser.add_argument("--width", type=float, default=None,
                        help="width multiplier (default: 1.0 for latency, 0.5 for accuracy as the demos)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num_classes", type=int, default=80, help="latency: object classes (80 COCO, 20 VOC); "
                        "the segmenters get one more (background)")
    parser.add_argument("--topk_candidates", type=int, default=300, help="latency: the detectors' candidates for NMS")
    parser.add_argument("--detections_per_img", type=int, default=100)
    parser.add_argument("--skip_latency", action="store_true")
    parser.add_argument("--ops", action="store_true", help="also time the full-size upsampling and label map alone")
    parser.add_argument("--accuracy", action="store_true", help="train the four models on the shapes and score them")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num_train", type=int, default=1500)
    parser.add_argument("--num_val", type=int, default=200)
    parser.add_argument("--image_size", type=int, default=192, help="accuracy: network input (the demos' 192)")
    parser.add_argument("--data_root", default="data/shapes_coco", help="the detection demo's generated set")
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segmentation_weight", type=float, default=1.0,
                        help="accuracy: JointLoss' weight of the segmentation loss (the detection loss has 1)")
    parser.add_argument("--models", nargs="+", help="accuracy: only these of the four (names as printed)")
    parser.add_argument("--train_threads", type=int, help="accuracy: torch threads (default: torch's); 1 wastes less "
                        "on a machine busy with other processes")
    parser.add_argument("--output", default="runs/joint_benchmark/accuracy.json")
    parser.add_argument("--report", nargs="+", metavar="JSON",
                        help="print the accuracy table of earlier --accuracy runs' outputs (e.g. two processes, each "
                             "with its own --models and --output) and exit")
    args = parser.parse_args(argv)
    if args.report:
        runs = [json.loads(Path(path).read_text()) for path in args.report]
        results = [{"seed": run["settings"]["seed"], "epochs": run["settings"]["epochs"], **r}  # older files
                   for run in runs for r in run["results"]]
        print_table(_accuracy_title(runs[0]["settings"]), _accuracy_rows(results), ACCURACY_COLUMNS)
        return
    if not args.skip_latency:
        width = args.width or 1.0
        with tempfile.TemporaryDirectory() as folder:
            rows = latency(size=args.size, width=width, runs=args.runs, warmup=args.warmup, threads=args.threads,
                           topk=args.topk_candidates, detections=args.detections_per_img, folder=Path(folder),
                           num_classes=args.num_classes)
        print_table(f"batch 1, {args.size}x{args.size}, width {width}, {args.num_classes} classes ("
                    f"{args.num_classes + 1} to segment), {args.threads} thread(s), median of {args.runs} "
                    "interleaved runs (ms); ratio: joint / (SSDLite + DeepLabv3-lite)", rows,
                    ("runtime", "model", "joint", "SSDLite", "DeepLabv3-lite", "the two", "ratio"))
    if args.ops:
        print_table(f"full-size work at {args.size}x{args.size}, {args.num_classes + 1} maps from stride 16, "
                    f"{args.threads} thread(s), median of {args.runs} runs (ms)",
                    full_size_ops(size=args.size, num_classes=args.num_classes, runs=args.runs, warmup=args.warmup,
                                  threads=args.threads), ("operation", "ms"))
    if args.accuracy:
        args.width = args.width or 0.5
        if args.train_threads:
            torch.set_num_threads(args.train_threads)
        results = accuracy(args)
        print_table(_accuracy_title(vars(args)), _accuracy_rows(results), ACCURACY_COLUMNS)


if __name__ == "__main__":
    main()
