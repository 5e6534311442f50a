"""One-run deploy benchmark: every inference format of ours against torchvision's eager peer, batch 1 on this CPU.

    python -m benchmarks.deploy [--runs 20] [--threads 1] [--accuracy]

Latency (random weights, nothing downloads; the median of ``--runs`` interleaved calls after a warm-up):

- backbone: MobileNetV2 classifier at 224 against torchvision's ``mobilenet_v2``;
- SSDLite-MobileNetV2 at 320, 80 classes, end to end (normalisation, network, decoding, class-wise NMS, 100
  detections) against torchvision's ``ssdlite320_mobilenet_v3_large`` end to end (its transform included);
- DeepLabv3-lite at 512, 21 classes (logits at the input size) against torchvision's ``lraspp_mobilenet_v3_large``.

Ours runs as: eager (the model floor, ``predict`` for the detector), fused (Conv+BN folded), compiled (fold +
``torch.compile`` inductor with freezing; the detector's post-processing stays eager), ONNX Runtime fp32 and
int8 (``export.py``'s graphs, post-processing inside), ExecuTorch fp32 and int8 (XNNPACK; static files of one
image, as ``export.py`` writes them: ``deploy/formats.py``), and with ``--formats ... litert`` LiteRT fp32 and
int8 (``deploy/litert.py``: the same graphs as ``.tflite`` in the LiteRT interpreter; needs the optional
litert-torch). int8 latency is calibrated on random images; its accuracy comes from ``--accuracy``.

``--accuracy`` exports the ``make demo`` / ``make demo-seg`` checkpoints in each format through ``export.py`` and
prints the parity figures it measures on the generated validation sets (mAP, mIoU: eager vs exported).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import median_latency, print_table
from mobilenetv2_dense.datasets.images import IMAGENET_MEAN, IMAGENET_STD
from mobilenetv2_dense.deploy.formats import dynamic_shapes, export_graph
from mobilenetv2_dense.deploy.fuse import compile_for_inference, fold_conv_bn
from mobilenetv2_dense.deploy.graph import ClassifierGraph, DetectorGraph, Normalize, SegmenterGraph
from mobilenetv2_dense.deploy.quantize import QUANTISED_OPS, QUANTISED_OPS_DENSE, quantize_onnx, quantize_pt2e
from mobilenetv2_dense.deploy.runtime import DeployedModel, write_sidecar
from mobilenetv2_dense.models import deeplabv3_mobilenet_v2, mobilenet_v2_classifier, ssdlite320_mobilenet_v2

DEMO_CHECKPOINTS = {
    "detection": ("configs/ssdlite_shapes_demo.yaml", "runs/shapes_detection"),
    "segmentation": ("configs/deeplabv3lite_shapes_demo.yaml", "runs/deeplabv3lite_shapes_demo"),
}


def _peer(task: str) -> tuple[nn.Module, Callable[[torch.Tensor], object]]:
    from torchvision.models import mobilenet_v2
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    if task == "backbone":
        model = mobilenet_v2(weights=None).eval()
        return model, model
    if task == "detection":
        model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=81).eval()
        model.score_thresh, model.nms_thresh, model.detections_per_img = 0.01, 0.45, 100
        return model, lambda x: model([x[0]])
    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    return model, lambda x: model(x)["out"]


def _ours(task: str) -> tuple[nn.Module, nn.Module, tuple[int, int], list[str]]:
    """(model, deployed graph of its Conv+BN folded copy, as export.py builds it, input size, output names)."""
    norm = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    if task == "backbone":
        model = mobilenet_v2_classifier(num_classes=1000).eval()
        return model, ClassifierGraph(fold_conv_bn(model), **norm), (224, 224), ["logits"]
    if task == "detection":
        model = ssdlite320_mobilenet_v2(num_classes=80).eval()
        graph = DetectorGraph(fold_conv_bn(model), (320, 320), **norm)
        return model, graph, (320, 320), ["boxes", "scores", "labels", "num_detections"]
    model = deeplabv3_mobilenet_v2(num_classes=21, head="lite").eval()
    return model, SegmenterGraph(fold_conv_bn(model), **norm), (512, 512), ["logits"]


def _eager_call(task: str, model: nn.Module) -> Callable[[torch.Tensor], object]:
    """The eager model end to end on ``[0, 1]`` images, as the model floor runs it."""
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if task == "detection":
        return lambda x: model.predict(normalize(x))
    key = "logits" if task == "backbone" else "out"
    return lambda x: model(normalize(x))[key]


def _compiled_call(task: str, model: nn.Module, image: torch.Tensor) -> Callable[[torch.Tensor], object]:
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    compiled = compile_for_inference(model, example=normalize(image))
    if task == "detection":
        return lambda x: model.postprocess(compiled(normalize(x)), tuple(x.shape[-2:]))
    return lambda x: compiled(normalize(x))


def latency(task: str, *, runs: int, warmup: int, threads: int, formats: list[str], folder: Path) -> list[tuple]:
    torch.manual_seed(0)
    peer, peer_call = _peer(task)
    model, graph, size, outputs = _ours(task)
    image = torch.rand(1, 3, *size)
    calibration = [torch.rand(2, 3, *size) for _ in range(4)]
    dynamic = task != "detection"
    min_size = 64 if task == "backbone" else 32
    eager, fused = _eager_call(task, model), _eager_call(task, fold_conv_bn(model))
    contenders: dict[str, Callable[[], object]] = {"torchvision eager": lambda: peer_call(image),
                                                   "ours eager": lambda: eager(image),
                                                   "ours fused": lambda: fused(image)}
    if "compiled" in formats:
        call = _compiled_call(task, model, image)
        contenders["ours compiled"] = lambda: call(image)
    example = torch.rand(2, 3, *size)
    graph = graph.eval()
    if "onnx" in formats:
        path, _ = export_graph(graph, example, folder / f"{task}.onnx", format="onnx", output_names=outputs,
                               dynamic_size=dynamic, min_size=min_size)
        _sidecar(path, task, outputs)
        int8 = quantize_onnx(path, folder / f"{task}.int8.onnx", calibration,
                             op_types=QUANTISED_OPS if task == "detection" else QUANTISED_OPS_DENSE)
        _sidecar(int8, task, outputs)
        for name, file in (("ONNX Runtime fp32", path), ("ONNX Runtime int8", int8)):
            deployed = DeployedModel(file, threads=threads)
            contenders[name] = lambda d=deployed: d(image)
    if "executorch" in formats:
        path, _ = export_graph(graph, example, folder / f"{task}.pte", format="executorch", output_names=outputs,
                               dynamic_size=dynamic, min_size=min_size)
        quantised = quantize_pt2e(graph, example, calibration,
                                  dynamic_shapes=dynamic_shapes(dynamic, min_size=min_size))
        int8, _ = export_graph(quantised, example, folder / f"{task}.int8.pte", format="executorch",
                               output_names=outputs, dynamic_size=dynamic, min_size=min_size)
        for name, file in (("ExecuTorch fp32", path), ("ExecuTorch int8", int8)):
            _sidecar(file, task, outputs)
            deployed = DeployedModel(file, threads=threads)
            contenders[name] = lambda d=deployed: d(image)
    if "litert" in formats:
        from mobilenetv2_dense.deploy.litert import LiteRTDeployedModel, write_litert

        for name, int8 in (("LiteRT fp32", False), ("LiteRT int8", True)):
            path, _ = write_litert(graph, example, folder / f"{task}{'.int8' if int8 else ''}.tflite",
                                   output_names=outputs, int8=int8, calibration=calibration)
            write_sidecar(path, {"task": {"backbone": "classification"}.get(task, task), "outputs": graph.outputs(),
                                 "classes": []})
            deployed = LiteRTDeployedModel(path, threads=threads)
            contenders[name] = lambda d=deployed: d(image)
    torch.set_num_threads(threads)
    timings = median_latency(contenders, runs=runs, warmup=warmup)
    reference = timings["torchvision eager"]
    return [(name, f"{seconds * 1e3:.1f}", f"{seconds / reference:.2f}") for name, seconds in timings.items()]


def _sidecar(path: Path, task: str, outputs: list[str]) -> None:
    """The least a DeployedModel reads (these timing files have no classes)."""
    write_sidecar(path, {"task": {"backbone": "classification"}.get(task, task),
                         "outputs": [{"name": name} for name in outputs], "classes": []})


def accuracy(formats: list[str], parity_images: int) -> list[tuple]:
    """Export the demo checkpoints in each format (float and int8) and read the parity figures."""
    from mobilenetv2_dense.commands.export import export
    from mobilenetv2_dense.deploy.runtime import read_sidecar

    rows = []
    for task, (config, folder) in DEMO_CHECKPOINTS.items():
        # the newest demo run's best checkpoint (each make demo writes the next csv/version_N)
        checkpoints = sorted(Path(folder).glob("csv/version_*/checkpoints/best*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not checkpoints:
            demo = "demo" if task == "detection" else "demo-seg"
            print(f"accuracy: no {folder}/csv/version_*/checkpoints/best*.ckpt; run make {demo} first")
            continue
        metric = "map" if task == "detection" else "miou"
        for fmt in [f for f in formats if f in ("onnx", "executorch")]:
            for int8 in (False, True):
                suffix = {"onnx": ".onnx", "executorch": ".pte"}[fmt]
                with tempfile.TemporaryDirectory() as out:
                    path = export(["--config", config, "--ckpt_path", str(checkpoints[-1]), "--format", fmt,
                                   "--output", str(Path(out) / f"model{suffix}"),
                                   "--parity_images", str(parity_images), *(["--int8"] if int8 else [])])
                    parity = read_sidecar(path)["parity"]
                eager, deployed = parity["eager"][metric], parity["deployed"][metric]
                rows.append((task, f"{fmt} {'int8' if int8 else 'fp32'}", metric, f"{eager:.4f}",
                             f"{deployed:.4f}", f"{deployed - eager:+.4f}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", nargs="+", default=["backbone", "detection", "segmentation"])
    parser.add_argument("--formats", nargs="+", default=["compiled", "onnx", "executorch"],
                        choices=["compiled", "onnx", "executorch", "litert"],
                        help="litert (float and int8 .tflite in the LiteRT interpreter) needs litert-torch installed")
    parser.add_argument("--accuracy", action="store_true", help="also export the demo checkpoints and compare")
    parser.add_argument("--parity_images", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        for task in args.tasks:
            rows = latency(task, runs=args.runs, warmup=args.warmup, threads=args.threads, formats=args.formats,
                           folder=Path(folder))
            print_table(f"{task}: batch 1, {args.threads} thread(s), median of {args.runs} (ratio: to torchvision "
                        "eager, below 1 is faster)", rows, ("contender", "ms", "ratio"))
    if args.accuracy:
        print_table("accuracy on the generated validation sets (demo checkpoints)",
                    accuracy(args.formats, args.parity_images),
                    ("task", "format", "metric", "eager", "exported", "delta"))


if __name__ == "__main__":
    main()
