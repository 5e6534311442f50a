"""One way to run a model for evaluation and prediction, whatever runs it: the PyTorch network (eager, Conv+BN
folded, or compiled) or an exported file (ONNX Runtime, ExecuTorch, LiteRT).

Every backend takes a batch as the data modules give it, ``images (N, 3, H, W)`` normalised, and returns a
:data:`Prediction`, a dict with the post-processed outputs of the model's kind:

- ``"detections"`` (detector, joint): per image ``boxes (D, 4)`` xyxy input pixels, ``scores (D,)``, ``labels (D,)``
  in 1..K, best first;
- ``"seg_logits"`` (segmenter, joint): ``(N, K, H', W')`` logits, on the images' device;
- ``"logits"`` (classifier): ``(N, K)``;
- ``"network"``: the raw network outputs (``bbox_regression``, ``cls_logits``, ``anchors``, ``out``, ...) where a
  PyTorch network ran, so a loss can be computed; an exported file gives none.

:func:`inference_backend` picks one from a task's ``inference`` setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .graph import denormalize

Prediction = dict[str, Any]
NETWORK_MODES = ("eager", "fused", "compiled")
EXPORTED_SUFFIXES = (".onnx", ".pte", ".tflite")


def check_inference(value: str, owner: str) -> str:
    """``value`` if it names a backend: ``eager``, ``fused``, ``compiled`` or an ``.onnx`` / ``.pte`` / ``.tflite``
    file path."""
    if value in NETWORK_MODES or Path(value).suffix.lower() in EXPORTED_SUFFIXES:
        return value
    raise ValueError(f"{owner}: inference must be 'eager', 'fused', 'compiled' or an exported .onnx / .pte / .tflite "
                     f"file, got {value!r}")


def is_exported(value: str) -> bool:
    """Whether an ``inference`` setting names an exported file (which runs no PyTorch network, so cannot train)."""
    return Path(value).suffix.lower() in EXPORTED_SUFFIXES


class NetworkBackend:
    """The PyTorch network as a backend.

    Args:
        model: a network whose outputs say what it is: a detector's ``cls_logits`` (and its ``postprocess(outputs,
            image_size)``, as :class:`~mobilenetv2_dense.models.SSDLite` has), a segmenter's ``out``, a classifier's
            ``logits``; the joint model gives the first two.
        mode: ``"eager"`` runs ``model``; ``"fused"`` a copy with every BatchNorm folded into its conv
            (:func:`~mobilenetv2_dense.deploy.fuse.fold_conv_bn`); ``"compiled"`` that copy under ``torch.compile``
            (:func:`~mobilenetv2_dense.deploy.fuse.compile_for_inference`, which first checks that no batch-norm op
            is left). The copy is made at the first call, from the weights ``model`` has then.
        channels_last: run in NHWC memory format.
    """

    def __init__(self, model: nn.Module, mode: str = "eager", *, channels_last: bool = False) -> None:
        if mode not in NETWORK_MODES:
            raise ValueError(f"NetworkBackend: mode must be one of {NETWORK_MODES}, got {mode!r}")
        self.model, self.mode, self.channels_last = model, mode, channels_last
        self._network: nn.Module | None = None

    def network(self, images: Tensor) -> dict[str, Tensor]:
        """The raw outputs of the network this backend runs."""
        import torch

        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mode == "eager":
            return self.model(images)
        if self._network is None:
            from .fuse import compile_for_inference, fold_conv_bn

            self._network = (fold_conv_bn(self.model) if self.mode == "fused" else
                             compile_for_inference(self.model, example=images))
        return self._network(images)

    def __call__(self, images: Tensor) -> Prediction:
        outputs = self.network(images)
        prediction: Prediction = {"network": outputs}
        if "cls_logits" in outputs:  # a detector (or the joint model): its own post-processing
            prediction["detections"] = self.model.postprocess(outputs, tuple(images.shape[-2:]))
        if "out" in outputs:  # a segmenter (or the joint model)
            prediction["seg_logits"] = outputs["out"]
        if "logits" in outputs:  # a classifier
            prediction["logits"] = outputs["logits"]
        return prediction


class ExportedBackend:
    """An exported ``.onnx`` / ``.pte`` / ``.tflite`` file (and its JSON sidecar) as a backend, run on the CPU by its
    runtime.

    The file is loaded and checked against what the task expects when the backend is made: its task kind, class
    counts, and the logits a segmenter's metrics need. The batch is brought back to the ``[0, 1]`` RGB the graph
    takes with the normalisation written in the sidecar (:meth:`check_normalization` holds the data to it).

    Args:
        path: the exported file.
        task: ``"detection"``, ``"segmentation"``, ``"joint"`` or ``"classification"``.
        num_classes: the task's K; ``num_seg_classes``: a joint task's K_seg.
        owner: the name errors start with (the task's class).
    """

    def __init__(self, path: str | Path, *, task: str, num_classes: int, num_seg_classes: int | None = None,
                 owner: str = "ExportedBackend") -> None:
        from .runtime import DeployedModel  # onnxruntime / executorch / ai-edge-litert only when used

        self.model = model = DeployedModel(path)
        self.path, self.task, self.owner = Path(path), task, owner
        if model.task != task or len(model.meta["classes"]) != num_classes:
            raise ValueError(f"{owner}: {path} is a {model.task} model of {len(model.meta['classes'])} classes, this "
                             f"task a {task} of {num_classes}; pass the config the file was exported from")
        if task == "joint" and (len(model.meta.get("seg_classes", [])) != num_seg_classes
                                or "seg_logits" not in model.output_names):
            raise ValueError(f"{owner}: {path} has {len(model.meta.get('seg_classes', []))} segmentation classes and "
                             f"outputs {model.output_names}; this task needs {num_seg_classes} classes and seg_logits: "
                             "export it from this config without --argmax")
        if task == "segmentation" and "logits" not in model.output_names:
            raise ValueError(f"{owner}: {path} outputs labels (exported with --argmax); validate, test and predict "
                             "need its logits: export it again without --argmax")
        normalization = model.meta["input"]["normalization_in_graph"]
        self.mean, self.std = tuple(normalization["mean"]), tuple(normalization["std"])

    def check_normalization(self, mean: Sequence[float], std: Sequence[float], data: str) -> None:
        """The data's normalisation must be the graph's, or the batch would be brought back to other pixels."""
        if [round(float(v), 6) for v in (*mean, *std)] != [round(float(v), 6) for v in (*self.mean, *self.std)]:
            raise ValueError(f"{self.owner}: {data} normalises with mean {tuple(mean)}, std {tuple(std)}, but "
                             f"{self.path} was exported with mean {self.mean}, std {self.std}; use the data "
                             "settings it was exported from")

    def __call__(self, images: Tensor) -> Prediction:
        model, size = self.model, list(images.shape[-2:])
        if not self.dynamic_size and size != model.meta["input"]["image_size"]:
            raise ValueError(f"{self.owner}: {self.path} was exported for {model.meta['input']['image_size']} inputs, "
                             f"the data gives {size}; set data.init_args.image_size to match or export again with "
                             "--image_size")
        outputs = model(denormalize(images, self.mean, self.std))
        prediction: Prediction = {}
        if self.task in ("detection", "joint"):
            prediction["detections"] = model.detections_from(outputs)
        if self.task in ("segmentation", "joint"):
            prediction["seg_logits"] = outputs["seg_logits" if self.task == "joint" else "logits"].to(images.device)
        if self.task == "classification":
            prediction["logits"] = outputs["logits"].to(images.device)
        return prediction

    @property
    def dynamic_size(self) -> bool:
        return bool(self.model.meta.get("dynamic_size", True))


def inference_backend(inference: str, model: nn.Module, *, task: str, num_classes: int,
                      num_seg_classes: int | None = None, channels_last: bool = False,
                      owner: str = "inference") -> NetworkBackend | ExportedBackend:
    """The backend an ``inference`` setting names (see :func:`check_inference`) for ``model``."""
    if is_exported(check_inference(inference, owner)):
        return ExportedBackend(inference, task=task, num_classes=num_classes, num_seg_classes=num_seg_classes,
                               owner=owner)
    return NetworkBackend(model, inference, channels_last=channels_last)
