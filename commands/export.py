"""The export command: a config (and a checkpoint) in, an ONNX, ExecuTorch or LiteRT file and its JSON sidecar out.

    python export.py --config configs/ssdlite_shapes_demo.yaml --ckpt_path best.ckpt --format onnx \\
        --output runs/export/ssdlite.onnx
    mobilenetv2-dense export ...      (the same arguments)

==============  ==========  ============================================================================
``--format``    file        writer (``--int8``: its own quantisation)
==============  ==========  ============================================================================
``onnx``        ``.onnx``   :func:`write_onnx` (ONNX Runtime static QDQ on the exported float file)
``executorch``  ``.pte``    :func:`write_executorch` (PT2E with XNNPACK's quantiser, before lowering)
``litert``      ``.tflite`` :func:`write_tflite` (PT2E with litert-torch's quantiser; input fixed at
                            ``(1, 3, H, W)``; needs ``pip install -e .[litert]``)
==============  ==========  ============================================================================

:func:`export` runs, in order:

1. :func:`parse_args`;
2. :func:`build_task`: the task and data module from the config through the project's LightningCLI (so
   ``--ckpt_path`` restores the trained architecture as ``validate`` would, and any ``--data.init_args.*`` /
   ``--model.init_args.*`` option may follow);
3. :func:`build_graph`: the network Conv+BN folded and wrapped with its normalisation and post-processing
   (:mod:`mobilenetv2_dense.deploy.graph`; each graph states its output contract), one builder per task kind;
4. :func:`data_at_size`: a fixed-size graph's data at the export's size, then :func:`calibration_batches`, with
   ``--int8``;
5. the format's writer (table above), which owns its int8 path;
6. :func:`sidecar`: the contract and the file's provenance as ``<output>.json``;
7. :func:`check_parity`: when the data module's validation set is on disk, the exported file run by its runtime
   against the eager model (:mod:`mobilenetv2_dense.commands.parity`), the figures into the sidecar.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import mobilenetv2_dense

from ..datasets.images import IMAGENET_MEAN, IMAGENET_STD
from ..deploy.formats import MAX_SIZE, MIN_SIZE, ONNX_OPSET, SUFFIX, dynamic_shapes, export_graph
from ..deploy.fuse import count_batchnorms, fold_conv_bn
from ..deploy.graph import ClassifierGraph, DetectorGraph, JointGraph, SegmenterGraph, denormalize, resize_to
from ..deploy.litert import count_int8_weights as count_tflite_int8_layers
from ..deploy.litert import litert_versions, require_litert, static_contract, write_litert
from ..deploy.quantize import (
    QUANTISED_OPS,
    QUANTISED_OPS_DENSE,
    count_int8_weights,
    count_onnx_int8_layers,
    quantize_onnx,
    quantize_pt2e,
)
from ..deploy.runtime import DeployedModel, sidecar_path, write_sidecar
from ..models.weights import load_checkpoint_weights
from ..tasks.datamodule import dataset_value, training_images
from ..tasks.qat import restore as restore_qat
from .cli import checkpoint_hyperparameters, cli_main, json_default
from .parity import parity

Size = tuple[int, int]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="export.py", description="Export a detection, segmentation, joint or classification model to ONNX, "
        "ExecuTorch or LiteRT, with normalisation and post-processing in the graph; other --model.* / --data.* options "
        "go to the config as on the training command line.")
    parser.add_argument("--config", required=True, help="the experiment's YAML config")
    parser.add_argument("--ckpt_path", help="a checkpoint of that config (without one the weights are random)")
    parser.add_argument("--format", choices=tuple(SUFFIX), default="onnx",
                        help="litert (.tflite) needs the optional litert-torch: pip install -e .[litert]")
    parser.add_argument("--output", help="file to write (default runs/export/<config name>.onnx|.pte|.tflite)")
    parser.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size: fixed for detection (default: the data's image_size), the tracing size "
                             "for segmentation and classification, whose H and W stay dynamic in onnx (fixed in "
                             "executorch and litert)")
    parser.add_argument("--argmax", action="store_true",
                        help="segmentation (and joint): output labels (N, H, W), not logits")
    parser.add_argument("--int8", action="store_true",
                        help="post-training int8 quantisation of the network: ONNX Runtime static (QDQ) for onnx, PT2E "
                             "with XNNPACK's quantiser for executorch, with litert-torch's for litert; per-channel "
                             "weights")
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
        if (qat := hparams.get("qat")) is not None:  # a QAT checkpoint holds its weights: the float start is not read
            hparams["qat"] = {**(dataclasses.asdict(qat) if dataclasses.is_dataclass(qat) else qat), "weights": None}
        class_path = hparams.pop("_class_path", None)
        spec = {"class_path": class_path, "init_args": hparams} if class_path else hparams
        args += ["--model", json.dumps(spec, default=json_default)]
    args += [*overrides, "--model.init_args.backbone.weights", "null"]  # the checkpoint (or nothing) gives weights
    with warnings.catch_warnings():  # LightningCLI warns that sys.argv differs from args: here it must
        warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
        cli = cli_main(args, run=False)
    task, extras = cli.model, {}
    if ckpt_path is not None:
        load_checkpoint_weights(task.model, ckpt_path)
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        extras = {key: checkpoint[key] for key in ("class_names", "label_to_cat_id") if checkpoint.get(key)}
        if "qat" in checkpoint:  # quantisation-aware trained: its fake quantisers too, for --int8
            restore_qat(task, checkpoint)
    return task.eval(), cli.datamodule, extras


def label_set(task: nn.Module, datamodule: Any, extras: dict) -> list[dict[str, Any]]:
    """``[{"label", "id", "name"}]`` of the model's classes: detection (and joint) labels 1..K with the dataset's
    category ids, segmentation and classification labels 0..K-1 (``id`` = label)."""
    names = extras.get("class_names") or dataset_value(datamodule, "class_names")
    count = task.num_classes
    names = [str(n) for n in names] if names is not None and len(names) == count else [f"class_{i}" for i in
                                                                                         range(count)]
    if getattr(task, "task_name", "") in ("detection", "joint"):  # label 0 is the detector's background
        cat_ids = extras.get("label_to_cat_id") or dataset_value(datamodule, "label_to_cat_id") or {}
        return [{"label": k, "id": int(cat_ids.get(k, k)), "name": names[k - 1]} for k in range(1, count + 1)]
    return [{"label": k, "id": k, "name": names[k]} for k in range(count)]


def seg_label_set(task: nn.Module, datamodule: Any, classes: list[dict]) -> list[dict[str, Any]]:
    """``[{"label", "id", "name"}]`` of a joint model's K_seg segmentation classes, labels 0..K_seg-1: the data's
    names, else the background then the detector's ``classes``."""
    names = dataset_value(datamodule, "seg_class_names") or task.seg_class_names
    if names is None or len(names) != task.num_seg_classes:
        names = ["background", *(c["name"] for c in classes)]
    return [{"label": k, "id": k, "name": str(name)} for k, name in enumerate(names)]


# One builder per task kind: (task, folded model, data module, classes, image_size, argmax, mean, std) -> the graph
# and the input size it is built (detection, joint) or traced (segmentation, classification) at.
def detector_graph(task: nn.Module, model: nn.Module, datamodule: Any, classes: list[dict], *,
                   image_size: Size | None, argmax: bool, mean: tuple, std: tuple) -> tuple[nn.Module, Size]:
    """SSDLite at ``image_size``, by default the data's (the anchors are constants of it)."""
    size = image_size or (datamodule.image_size, datamodule.image_size)
    return DetectorGraph(model, size, mean=mean, std=std, category_ids=[c["id"] for c in classes]), size


def joint_graph(task: nn.Module, model: nn.Module, datamodule: Any, classes: list[dict], *,
                image_size: Size | None, argmax: bool, mean: tuple, std: tuple) -> tuple[nn.Module, Size]:
    """SSDLite + DeepLabv3-lite at ``image_size``, by default the data's; segmentation labels with ``argmax``."""
    size = image_size or (datamodule.image_size, datamodule.image_size)
    return JointGraph(model, size, mean=mean, std=std, category_ids=[c["id"] for c in classes],
                      argmax=argmax), size


def segmenter_graph(task: nn.Module, model: nn.Module, datamodule: Any, classes: list[dict], *,
                    image_size: Size | None, argmax: bool, mean: tuple, std: tuple) -> tuple[nn.Module, Size]:
    """DeepLabV3 at the task's evaluation output stride, traced at ``image_size`` or the data's crop."""
    if task.evaluation.output_stride is not None:
        model.set_output_stride(task.evaluation.output_stride)
    crop = getattr(datamodule, "crop_size", 512)
    return SegmenterGraph(model, mean=mean, std=std, argmax=argmax), image_size or (crop, crop)


def classifier_graph(task: nn.Module, model: nn.Module, datamodule: Any, classes: list[dict], *,
                     image_size: Size | None, argmax: bool, mean: tuple, std: tuple) -> tuple[nn.Module, Size]:
    """The classifier, traced at ``image_size`` or the data's."""
    side = getattr(datamodule, "image_size", 224)
    return ClassifierGraph(model, mean=mean, std=std), image_size or (side, side)


GRAPHS: dict[str, Callable[..., tuple[nn.Module, Size]]] = {
    "detection": detector_graph, "joint": joint_graph, "segmentation": segmenter_graph,
    "classification": classifier_graph}


def input_contract(size: Size, *, dynamic_size: bool, min_size: int, mean: tuple, std: tuple) -> dict[str, Any]:
    """The ``images`` input of the sidecar: ``(N, 3, H, W)`` RGB in ``[0, 1]``, H and W fixed at ``size`` or dynamic
    in ``size_range`` (``size`` then the tracing size)."""
    height, width = size
    contract = {"name": "images", "shape": ["N", 3, "H" if dynamic_size else height, "W" if dynamic_size else width],
                "dtype": "float32", "layout": "NCHW", "channels": "RGB", "range": [0.0, 1.0],
                "image_size": [height, width], "normalization_in_graph": {"mean": mean, "std": std}}
    if dynamic_size:
        contract["size_range"] = [min_size, MAX_SIZE]
    return contract


def build_graph(task: nn.Module, datamodule: Any, classes: list[dict], *, image_size: Size | None,
                argmax: bool) -> tuple[nn.Module, Tensor, dict[str, Any]]:
    """The deployed graph of ``task`` (Conv+BN folded; the builder chosen by ``task.task_name``), an example input
    ``(2, 3, H, W)`` for tracing, and the sidecar's contract: the graph's own (``graph.contract()``), the joint
    model's ``seg_classes``, ``input`` and ``classes``."""
    kind = getattr(task, "task_name", "")
    if kind not in GRAPHS:
        raise TypeError(f"build_graph: {type(task).__name__}.task_name is {kind!r}; export builds graphs for "
                        f"{', '.join(GRAPHS)}: give the task one of these names or add a builder to GRAPHS")
    mean = tuple(getattr(datamodule, "mean", IMAGENET_MEAN))
    std = tuple(getattr(datamodule, "std", IMAGENET_STD))
    graph, size = GRAPHS[kind](task, fold_conv_bn(task.model), datamodule, classes, image_size=image_size,
                               argmax=argmax, mean=mean, std=std)
    contract = graph.contract()
    if kind == "joint":
        contract["seg_classes"] = seg_label_set(task, datamodule, classes)
    # The tracing example must lie in the dynamic range (a classifier's starts at ClassifierGraph.min_size).
    size = tuple(max(int(s), contract.get("min_size", 0)) for s in size)
    contract["input"] = input_contract(size, dynamic_size=contract["dynamic_size"],
                                       min_size=contract.get("min_size", MIN_SIZE), mean=mean, std=std)
    contract["classes"] = classes
    # Batch 2 for tracing: an example of 1 would specialise the dynamic batch dimension to 1.
    return graph.eval(), torch.rand(2, 3, *size), contract


def fixed_size(contract: dict[str, Any]) -> Size | None:
    """The ``(H, W)`` a fixed-size graph (detection, joint) takes, or ``None`` when H and W are dynamic."""
    return None if contract["dynamic_size"] else tuple(contract["input"]["image_size"])


def data_at_size(datamodule: Any, size: Size | None) -> None:
    """Make the data module give the images a graph fixed at ``size`` takes, before its set-up: a square size becomes
    its ``image_size`` (the detection and joint data modules resize to ``S x S``), so calibration and parity read
    images resized once, as ``validate`` at that size would. Any other size (H != W), or a data module without an
    integer ``image_size``, is reached by resizing its batches (:func:`~mobilenetv2_dense.deploy.graph.resize_to`)."""
    if size is not None and size[0] == size[1] and isinstance(getattr(datamodule, "image_size", None), int):
        datamodule.image_size = int(size[0])


def calibration_batches(datamodule: Any, count: int, size: Size | None = None) -> list[Tensor]:
    """``count`` training images as ``[0, 1]`` batches (the exported graph's input), for int8 calibration; resized
    to ``size`` (a fixed-size graph's) where the data gives another."""
    datamodule.setup("fit")
    batches = [resize_to(denormalize(images, datamodule.mean, datamodule.std), size)
               for images in training_images(datamodule, count)]
    if not batches:
        raise ValueError(f"calibration_batches: {type(datamodule).__name__} has no training images to calibrate "
                         "on; give the data module a training set or export without --int8")
    return batches


def int8_summary(graph: nn.Module, calibration: list[Tensor] | None, int8_layers: int, **method: Any) -> dict[str, Any]:
    """The sidecar's ``int8`` block: what was quantised of the float ``graph`` and how (``calibration`` ``None``:
    quantisation-aware training, whose ranges were observed while training)."""
    calibrated = {"calibration_images": sum(len(b) for b in calibration)} if calibration is not None else {}
    return {**calibrated, "weights": "int8, per output channel",
            "int8_layers": int8_layers,
            "float_layers": sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in graph.modules()),  # int8's target
            "float": "normalisation and post-processing", **method}


def write_onnx(graph: nn.Module, example: Tensor, output: Path, contract: dict[str, Any],
               calibration: list[Tensor] | None) -> tuple[Path, float, dict[str, Any] | None]:
    """``graph`` as ``output`` (``.onnx``); with ``calibration`` batches, int8: the float export goes to a
    ``.fp32`` file beside it, which :func:`quantize_onnx` turns into ``output`` and which is then deleted.
    Returns the file, the export's seconds and the ``int8`` block (``None``: float)."""
    names = [o["name"] for o in contract["outputs"]]
    shape = {"dynamic_size": contract["dynamic_size"], "min_size": contract.get("min_size", MIN_SIZE)}
    if calibration is None:
        return *export_graph(graph, example, output, format="onnx", output_names=names, **shape), None
    float_output = output.with_name(output.stem + ".fp32" + output.suffix)
    _, seconds = export_graph(graph, example, float_output, format="onnx", output_names=names, **shape)
    # A detector's post-processing (and so a joint graph's) keeps float coordinates: its convolutions alone.
    op_types = QUANTISED_OPS if contract["task"] in ("detection", "joint") else QUANTISED_OPS_DENSE
    try:
        path = quantize_onnx(float_output, output, calibration, op_types=op_types)
    finally:
        float_output.unlink(missing_ok=True)
    return path, seconds, int8_summary(graph, calibration, count_onnx_int8_layers(path),
                                       method="ONNX Runtime quantize_static, QDQ",
                                       activations="uint8, per tensor, min/max", quantised_ops=list(op_types))


def write_executorch(graph: nn.Module, example: Tensor, output: Path, contract: dict[str, Any],
                     calibration: list[Tensor] | None) -> tuple[Path, float, dict[str, Any] | None]:
    """``graph`` lowered to XNNPACK as ``output`` (``.pte``, input ``(1, 3, H, W)`` at ``example``'s size:
    :func:`~mobilenetv2_dense.deploy.formats.export_executorch`); with ``calibration`` batches, its network quantised
    first (:func:`quantize_pt2e`). Returns the file, the export's seconds and the ``int8`` block (``None``: float)."""
    names = [o["name"] for o in contract["outputs"]]
    shape = {"dynamic_size": contract["dynamic_size"], "min_size": contract.get("min_size", MIN_SIZE)}
    int8 = None
    if calibration is not None:
        quantised = quantize_pt2e(graph, example, calibration, dynamic_shapes=dynamic_shapes(**shape))
        int8 = int8_summary(graph, calibration, count_int8_weights(quantised.network),
                            method="PT2E, XNNPACKQuantizer (symmetric)",
                            activations="int8, per tensor, histogram observer")
        graph = quantised
    return *export_graph(graph, example, output, format="executorch", output_names=names, **shape), int8


def write_tflite(graph: nn.Module, example: Tensor, output: Path, contract: dict[str, Any],
                 calibration: list[Tensor] | None) -> tuple[Path, float, dict[str, Any] | None]:
    """``graph`` converted by litert-torch as ``output`` (``.tflite``, input ``(1, 3, H, W)`` at ``example``'s size:
    :func:`~mobilenetv2_dense.deploy.litert.write_litert`); with ``calibration`` batches, its network quantised
    first by PT2E. Returns the file, the export's seconds and the ``int8`` block (``None``: float)."""
    path, seconds = write_litert(graph, example, output, output_names=[o["name"] for o in contract["outputs"]],
                                 int8=calibration is not None, calibration=calibration)
    if calibration is None:
        return path, seconds, None
    return path, seconds, int8_summary(graph, calibration, count_tflite_int8_layers(path),
                                       method="PT2E, litert-torch PT2EQuantizer (symmetric), converter's static Q/DQ",
                                       activations="int8, per tensor, min/max")


def qat_network(task: nn.Module, graph: nn.Module, contract: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A quantisation-aware trained checkpoint's int8: its fake-quantised network converted (PT2E ``convert_pt2e``)
    replaces ``graph``'s float network, and the writer exports it as it is (ExecuTorch lowers the int8 ops to XNNPACK;
    ONNX gets ``QuantizeLinear`` / ``DequantizeLinear`` pairs, a QDQ model). Returns the sidecar's ``int8`` block."""
    network = task.qat_network
    if fmt not in ("onnx", "executorch"):
        raise ValueError(f"export: --format {fmt} --int8 of a quantisation-aware trained checkpoint is not supported; "
                         "use --format onnx or executorch (or export the float weights without --int8)")
    size = fixed_size(contract)
    if size is not None and tuple(size) != network.image_size:
        raise ValueError(f"export: this checkpoint was quantisation-aware trained at {list(network.image_size)}, "
                         f"its int8 graph takes only that size, not --image_size {list(size)}; leave --image_size "
                         "out or train QAT at the size you export")
    converted = network.convert()
    ranges = ("histogram observer at the start of training, then fixed" if bool(network.ranges_calibrated)
              else "moving-average min/max observed in training")
    summary = int8_summary(graph, None, count_int8_weights(converted),
                           method="PT2E quantisation-aware training, XNNPACKQuantizer (symmetric)",
                           activations=f"int8, per tensor, {ranges}")
    graph.network = converted  # after the summary, which counts the float graph's layers
    return summary


WRITERS = {"onnx": write_onnx, "executorch": write_executorch, "litert": write_tflite}
# A format's own contract: a LiteRT or ExecuTorch file's every dimension is static, (1, 3, H, W) at the export's size
# (ExecuTorch: so that XNNPACK runs every op and memory is planned for one image, deploy/formats.py).
CONTRACTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"litert": static_contract,
                                                                    "executorch": static_contract}


def versions(fmt: str) -> dict[str, str]:
    out = {"mobilenetv2_dense": mobilenetv2_dense.__version__, "torch": torch.__version__,
           "python": platform.python_version()}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        out.update(onnx=onnx.__version__, onnx_opset=str(ONNX_OPSET), onnxruntime=onnxruntime.__version__)
    elif fmt == "executorch":
        from importlib.metadata import version

        out.update(executorch=version("executorch"), delegate="XNNPACK")
    else:
        out.update(litert_versions())
    return out


def sidecar(contract: dict[str, Any], args: argparse.Namespace, path: Path, seconds: float,
            int8: dict[str, Any] | None) -> dict[str, Any]:
    """The ``<output>.json`` a :class:`DeployedModel` reads: the contract, the int8 block, the file's provenance;
    ``parity`` is filled by :func:`check_parity`."""
    return {**contract, **({"int8": int8} if int8 is not None else {}), "format": args.format, "file": path.name,
            "config": str(args.config), "checkpoint": str(args.ckpt_path) if args.ckpt_path else None,
            "versions": versions(args.format), "export_seconds": round(seconds, 1), "parity": None}


def check_parity(task: nn.Module, datamodule: Any, path: Path, meta: dict[str, Any], *, max_images: int,
                 argmax: bool, reference: nn.Module | None = None) -> None:
    """Run ``path`` against the eager model (or ``reference``) on up to ``max_images`` validation images; the figures
    go into the sidecar ``meta`` (rewritten) and are printed."""
    figures = parity(task, DeployedModel(path), datamodule, max_images=max_images, argmax=argmax, reference=reference)
    meta["parity"] = figures
    write_sidecar(path, meta)
    print(f"export: parity on {figures.get('images', 0)} validation images: "
          f"{json.dumps({k: v for k, v in figures.items() if k != 'images'})}")


def export(argv: list[str] | None = None) -> Path:
    """Run the export command on ``argv``; returns the written model file."""
    args, overrides = parse_args(argv)
    if args.format == "litert":
        require_litert()  # before the task is built: a missing optional converter fails at once
    task, datamodule, extras = build_task(args.config, args.ckpt_path, overrides)
    if args.ckpt_path is None:
        print(f"export: no --ckpt_path; exporting {args.config}'s untrained weights", file=sys.stderr)
    graph, example, contract = build_graph(task, datamodule, label_set(task, datamodule, extras),
                                           image_size=args.image_size, argmax=args.argmax)
    contract = CONTRACTS.get(args.format, dict)(contract)
    output = Path(args.output or Path("runs/export") / f"{Path(args.config).stem}{SUFFIX[args.format]}")
    print(f"export: {contract['task']} -> {output} ({args.format}; {count_batchnorms(task.model)} BatchNorms folded "
          f"into their convs, {count_batchnorms(graph)} left)")
    size = fixed_size(contract)
    data_at_size(datamodule, size)  # calibration and parity feed the file the size it was exported at
    trained_int8 = args.int8 and task.qat_network is not None  # a QAT checkpoint: converted, not calibrated
    calibration = calibration_batches(datamodule, args.calibration, size) if args.int8 and not trained_int8 else None
    qat_int8 = qat_network(task, graph, contract, args.format) if trained_int8 else None
    path, seconds, int8 = WRITERS[args.format](graph, example, output, contract, calibration)
    int8 = int8 or qat_int8
    meta = sidecar(contract, args, path, seconds, int8)
    write_sidecar(path, meta)
    if args.parity_images > 0:
        # A QAT file computes the fake-quantised network it was converted from: that is its eager model.
        check_parity(task, datamodule, path, meta, max_images=args.parity_images, argmax=args.argmax,
                     reference=task.qat_network if trained_int8 else None)
    print(f"export: wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {seconds:.0f} s) and {sidecar_path(path)}")
    return path


def main(argv: list[str] | None = None) -> None:
    export(argv)


if __name__ == "__main__":
    main()
