"""The export command: a config (and a checkpoint) in, an ONNX or ExecuTorch file and its JSON sidecar out.

    python export.py --config configs/ssdlite_shapes_demo.yaml --ckpt_path best.ckpt --format onnx \\
        --output runs/export/ssdlite.onnx
    mobilenetv2-dense export ...      (the same arguments)

The task and data module come from the config through the project's LightningCLI (so ``--ckpt_path`` restores
the trained architecture as ``validate`` would, and any ``--data.init_args.*`` / ``--model.init_args.*`` option
may follow); the network is Conv+BN folded, wrapped with its normalisation and post-processing
(:mod:`mobilenetv2_dense.deploy.graph`) and exported (:mod:`mobilenetv2_dense.deploy.formats`). When the data
module's validation set is on disk, the exported file is run by its runtime on it and compared with the eager
model (:mod:`mobilenetv2_dense.commands.parity`); the figures go into the sidecar ``<output>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mobilenetv2_dense

from ..datasets.images import IMAGENET_MEAN, IMAGENET_STD
from ..deploy.formats import ONNX_OPSET, SUFFIX, dynamic_shapes, export_graph
from ..deploy.fuse import count_batchnorms, fold_conv_bn
from ..deploy.graph import ClassifierGraph, DetectorGraph, JointGraph, SegmenterGraph
from ..deploy.runtime import DeployedModel, sidecar_path, write_sidecar
from ..models.weights import load_checkpoint_weights
from ..tasks.classification import ClassificationTask
from ..tasks.datamodule import dataset_value
from ..tasks.detection import DetectionTask
from ..tasks.joint import JointTask
from ..tasks.segmentation import SegmentationTask
from .cli import checkpoint_hyperparameters, cli_main, json_default


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="export.py", description="Export a detection, segmentation, joint or classification model to ONNX or "
        "ExecuTorch, with normalisation and post-processing in the graph; other --model.* / --data.* options go to "
        "the config as on the training command line.")
    parser.add_argument("--config", required=True, help="the experiment's YAML config")
    parser.add_argument("--ckpt_path", help="a checkpoint of that config (without one the weights are random)")
    parser.add_argument("--format", choices=("onnx", "executorch"), default="onnx")
    parser.add_argument("--output", help="file to write (default runs/export/<config name>.onnx|.pte)")
    parser.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size: fixed for detection (default: the data's image_size), the tracing size "
                             "for segmentation and classification, whose H and W stay dynamic")
    parser.add_argument("--argmax", action="store_true",
                        help="segmentation (and joint): output labels (N, H, W), not logits")
    parser.add_argument("--int8", action="store_true",
                        help="post-training int8 quantisation of the network: ONNX Runtime static (QDQ) for onnx, PT2E "
                             "with XNNPACK's quantiser for executorch; per-channel weights")
    parser.add_argument("--calibration", type=int, default=64, metavar="N",
                        help="training images that calibrate the int8 activation ranges")
    parser.add_argument("--parity_images", type=int, default=200,
                        help="validation images to compare the exported file with the eager model on (0: none)")
    return parser.parse_known_args(argv)


def build_task(config: str, ckpt_path: str | None, overrides: list[str]) -> tuple[nn.Module, Any, dict]:
    """The task and data module of ``config`` (+ the checkpoint's hyper-parameters and weights), and the
    checkpoint's saved extras (``class_names``, ``label_to_cat_id``) or ``{}``."""
    args = ["--config", config]
    if ckpt_path is not None:
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"--ckpt_path {ckpt_path} does not exist")
        hparams = checkpoint_hyperparameters(ckpt_path)
        class_path = hparams.pop("_class_path", None)
        spec = {"class_path": class_path, "init_args": hparams} if class_path else hparams
        args += ["--model", json.dumps(spec, default=json_default)]
    args += [*overrides, "--model.init_args.backbone_weights", "null"]  # the checkpoint (or nothing) gives weights
    with warnings.catch_warnings():  # LightningCLI warns that sys.argv differs from args: here it must
        warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
        cli = cli_main(args, run=False)
    task, extras = cli.model, {}
    if ckpt_path is not None:
        load_checkpoint_weights(task.model, ckpt_path)
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        extras = {key: checkpoint[key] for key in ("class_names", "label_to_cat_id") if checkpoint.get(key)}
    return task.eval(), cli.datamodule, extras


def label_set(task: nn.Module, datamodule: Any, extras: dict) -> list[dict[str, Any]]:
    """``[{"label", "id", "name"}]`` of the model's classes: detection labels 1..K with the dataset's category
    ids, segmentation and classification labels 0..K-1 (``id`` = label)."""
    names = extras.get("class_names") or dataset_value(datamodule, "class_names")
    count = task.num_classes
    names = [str(n) for n in names] if names is not None and len(names) == count else [f"class_{i}" for i in
                                                                                         range(count)]
    if isinstance(task, DetectionTask):
        cat_ids = extras.get("label_to_cat_id") or dataset_value(datamodule, "label_to_cat_id") or {}
        return [{"label": k, "id": int(cat_ids.get(k, k)), "name": names[k - 1]} for k in range(1, count + 1)]
    return [{"label": k, "id": k, "name": names[k]} for k in range(count)]


def build_graph(task: nn.Module, datamodule: Any, classes: list[dict], *, image_size: tuple[int, int] | None,
                argmax: bool) -> tuple[nn.Module, torch.Tensor, dict[str, Any]]:
    """The deployed graph (Conv+BN folded), an example input for tracing, and the contract for the sidecar."""
    mean = tuple(getattr(datamodule, "mean", IMAGENET_MEAN))
    std = tuple(getattr(datamodule, "std", IMAGENET_STD))
    folded = fold_conv_bn(task.model)
    if isinstance(task, DetectionTask):  # a JointTask too: the detector's outputs, then the segmentation's
        size = image_size or (datamodule.image_size, datamodule.image_size)
        joint = isinstance(task, JointTask)
        kind = JointGraph if joint else DetectorGraph
        graph = kind(folded, size, mean=mean, std=std, category_ids=[c["id"] for c in classes],
                     **({"argmax": argmax} if joint else {}))
        d = folded.post_processing.detections_per_img
        outputs = [{"name": "boxes", "shape": ["N", d, 4], "dtype": "float32"},
                   {"name": "scores", "shape": ["N", d], "dtype": "float32"},
                   {"name": "labels", "shape": ["N", d], "dtype": "int64"},
                   {"name": "num_detections", "shape": ["N"], "dtype": "int64"}]
        if joint:
            height, width = size
            outputs.append({"name": "seg_labels", "shape": ["N", height, width], "dtype": "int64"} if argmax else
                           {"name": "seg_logits", "shape": ["N", task.num_seg_classes, height, width],
                            "dtype": "float32"})
        contract = {"task": "joint" if joint else "detection", "dynamic_size": False, "outputs": outputs,
                    "post_processing": {**dataclasses.asdict(folded.post_processing),
                                        "classification": folded.classification, "nms": "class-wise, greedy"},
                    # the default boxes are constants of the graph; their generator values, for a reader
                    "anchors": folded.anchor_settings.plain()}
        if joint:
            names = dataset_value(datamodule, "seg_class_names") or task.seg_class_names
            names = names if names is not None and len(names) == task.num_seg_classes else \
                ["background", *(c["name"] for c in classes)]
            contract["seg_classes"] = [{"label": k, "id": k, "name": str(name)} for k, name in enumerate(names)]
            contract["output_stride"] = folded.backbone.output_stride
    elif isinstance(task, SegmentationTask):
        if task.evaluation.output_stride is not None:
            folded.set_output_stride(task.evaluation.output_stride)
        crop = getattr(datamodule, "crop_size", 512)
        size = image_size or (crop, crop)
        graph = SegmenterGraph(folded, mean=mean, std=std, argmax=argmax)
        output = ({"name": "labels", "shape": ["N", "H", "W"], "dtype": "int64"} if argmax else
                  {"name": "logits", "shape": ["N", task.num_classes, "H", "W"], "dtype": "float32"})
        contract = {"task": "segmentation", "dynamic_size": True, "outputs": [output],
                    "output_stride": folded.output_stride}
    elif isinstance(task, ClassificationTask):
        side = getattr(datamodule, "image_size", 224)
        size = image_size or (side, side)
        graph = ClassifierGraph(folded, mean=mean, std=std)
        contract = {"task": "classification", "dynamic_size": True, "min_size": 64,
                    "outputs": [{"name": "logits", "shape": ["N", task.num_classes], "dtype": "float32"}]}
    else:
        raise TypeError(f"export: {type(task).__name__} is not a DetectionTask, JointTask, SegmentationTask or "
                        "ClassificationTask")
    # The tracing example must lie in the dynamic range (a classifier's starts at 64, see deploy/formats.py).
    height, width = (max(int(s), contract.get("min_size", 0)) for s in size)
    contract["input"] = {"name": "images", "shape": ["N", 3, "H" if contract["dynamic_size"] else height,
                                                     "W" if contract["dynamic_size"] else width],
                         "dtype": "float32", "layout": "NCHW", "channels": "RGB", "range": [0.0, 1.0],
                         "image_size": [height, width], "normalization_in_graph": {"mean": mean, "std": std}}
    if contract["dynamic_size"]:
        contract["input"]["size_range"] = [contract.get("min_size", 32), 2048]
    contract["classes"] = classes
    # Batch 2 for tracing: an example of 1 would specialise the dynamic batch dimension to 1.
    example = torch.rand(2, 3, height, width)
    return graph.eval(), example, contract


def calibration_batches(datamodule: Any, count: int) -> list[torch.Tensor]:
    """``count`` training images as ``[0, 1]`` batches (the exported graph's input), for int8 calibration."""
    from .parity import unnormalize

    datamodule.setup("fit")
    batches, seen = [], 0
    for batch in datamodule.train_dataloader():
        images = batch[0] if isinstance(batch, (list, tuple)) else batch["images"]
        batches.append(unnormalize(images[: count - seen], datamodule))
        seen += len(batches[-1])
        if seen >= count:
            return batches
    if not batches:
        raise ValueError(f"export --int8: {type(datamodule).__name__} has no training images to calibrate on")
    return batches


def versions(fmt: str) -> dict[str, str]:
    out = {"mobilenetv2_dense": mobilenetv2_dense.__version__, "torch": torch.__version__,
           "python": platform.python_version()}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        out.update(onnx=onnx.__version__, onnx_opset=str(ONNX_OPSET), onnxruntime=onnxruntime.__version__)
    else:
        from importlib.metadata import version

        out.update(executorch=version("executorch"), delegate="XNNPACK")
    return out


def export(argv: list[str] | None = None) -> Path:
    """Run the export command on ``argv``; returns the written model file."""
    args, overrides = parse_args(argv)
    task, datamodule, extras = build_task(args.config, args.ckpt_path, overrides)
    if args.ckpt_path is None:
        print(f"export: no --ckpt_path; exporting {args.config}'s untrained weights", file=sys.stderr)
    classes = label_set(task, datamodule, extras)
    graph, example, contract = build_graph(task, datamodule, classes, image_size=args.image_size,
                                           argmax=args.argmax)
    output = Path(args.output or Path("runs/export") / f"{Path(args.config).stem}{SUFFIX[args.format]}")
    print(f"export: {contract['task']} -> {output} ({args.format}; {count_batchnorms(task.model)} BatchNorms folded "
          f"into their convs, {count_batchnorms(graph)} left)")
    batches = calibration_batches(datamodule, args.calibration) if args.int8 else []
    float_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in graph.modules())  # what int8 should take
    min_size = contract.get("min_size", 32)
    if args.int8 and args.format == "executorch":
        from ..deploy.quantize import count_int8_weights, quantize_pt2e

        graph = quantize_pt2e(graph, example, batches,
                              dynamic_shapes=dynamic_shapes(contract["dynamic_size"], min_size=min_size))
        int8_layers = count_int8_weights(graph.network)
    onnx_int8 = args.int8 and args.format == "onnx"
    float_output = output.with_name(output.stem + ".fp32" + output.suffix) if onnx_int8 else output
    path, seconds = export_graph(graph, example, float_output, format=args.format,
                                 output_names=[o["name"] for o in contract["outputs"]],
                                 dynamic_size=contract["dynamic_size"], min_size=min_size)
    if onnx_int8:
        from ..deploy.quantize import (
            QUANTISED_OPS,
            QUANTISED_OPS_DENSE,
            count_onnx_int8_layers,
            quantize_onnx,
        )

        # A detector's post-processing (and so a joint graph's) keeps float coordinates: its convolutions alone.
        op_types = QUANTISED_OPS if contract["task"] in ("detection", "joint") else QUANTISED_OPS_DENSE
        path = quantize_onnx(float_output, output, batches, op_types=op_types)
        float_output.unlink()
        int8_layers = count_onnx_int8_layers(path)
    if args.int8:
        contract["int8"] = {
            "calibration_images": sum(len(b) for b in batches), "weights": "int8, per output channel",
            "int8_layers": int8_layers, "float_layers": float_layers,
            "float": "normalisation and post-processing",
            **({"method": "ONNX Runtime quantize_static, QDQ", "activations": "uint8, per tensor, min/max",
                "quantised_ops": list(op_types)} if onnx_int8 else
               {"method": "PT2E, XNNPACKQuantizer (symmetric)", "activations": "int8, per tensor, min/max"})}
    meta = {**contract, "format": args.format, "file": path.name, "config": str(args.config),
            "checkpoint": str(args.ckpt_path) if args.ckpt_path else None, "versions": versions(args.format),
            "export_seconds": round(seconds, 1), "parity": None}
    write_sidecar(path, meta)
    if args.parity_images > 0:
        from .parity import parity

        figures = parity(task, DeployedModel(path), datamodule, max_images=args.parity_images, argmax=args.argmax)
        meta["parity"] = figures
        write_sidecar(path, meta)
        print(f"export: parity on {figures.get('images', 0)} validation images: "
              f"{json.dumps({k: v for k, v in figures.items() if k != 'images'})}")
    print(f"export: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {seconds:.0f} s) and {sidecar_path(path)}")
    return path


def main(argv: list[str] | None = None) -> None:
    export(argv)


if __name__ == "__main__":
    main()
