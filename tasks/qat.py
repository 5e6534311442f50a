"""Quantisation-aware training as a stage of any task: a task's ``qat`` block (YAML, or ``--model.init_args.qat.*``).

    python train_task.py fit --config configs/ssdlite_shapes_demo.yaml \\
        --model.init_args.qat.weights runs/float/last.ckpt --trainer.max_epochs 3 \\
        --model.init_args.optimization.lr 0.0001 --model.init_args.optimization.warmup_epochs 0
    python export.py --config configs/ssdlite_shapes_demo.yaml --ckpt_path <the QAT run's last.ckpt> \\
        --format executorch --int8

With the block, the task loads ``qat.weights`` (a float checkpoint of the same config), traces its network at the
data's size, calibrates its activation ranges on ``qat.calibration`` training images (as PTQ does; they stay fixed)
and trains it with fake quantisation (:class:`mobilenetv2_dense.deploy.qat.FakeQuantizedNetwork`, PT2E):
``training_step`` and the validations inside ``fit`` run the fake-quantised network, so ``val/`` metrics are the
int8 model's. ``validate``, ``test`` and ``predict`` of the checkpoint do too (``inference: eager``); ``export.py
--int8`` converts it instead of calibrating (ExecuTorch and QDQ ONNX). The checkpoint keeps the float weights under
the usual ``model.*`` keys (they load as a float model anywhere) and adds the fake quantisers' state
(``qat_network.*``) and ``checkpoint["qat"]``, the traced size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from ..deploy.formats import MIN_SIZE
from ..deploy.graph import ClassifierGraph
from ..deploy.qat import FakeQuantizedNetwork
from ..heads.anchors import AnchorSettings
from ..models.weights import load_checkpoint_weights
from .datamodule import training_images

PREFIX = "qat_network."


@dataclass
class QATSettings:
    """Quantisation-aware training from a float checkpoint (a task's ``qat`` block; ``None``: float training).

    Args:
        weights: the float checkpoint to start from: a ``.ckpt`` of this task and config (or a ``torch.save`` of
            its model's ``state_dict``). A detector takes the checkpoint's anchors too (settings, not weights;
            ``fit_anchors`` is not run again). ``None``: the task's own start weights (a resumed QAT run gets them
            from ``--ckpt_path``).
        calibration: training images that set the activation ranges before the first step, as ``export.py
            --int8`` calibrates them (XNNPACK's histogram observers); the ranges then stay fixed, so QAT starts from
            the PTQ model and trains the weights to it. ``0``: the ranges start from the training batches and follow
            moving averages of each batch's min / max until ``freeze_observers_epoch``.
        freeze_observers_epoch: from this epoch on (0-based) the weight scales (and uncalibrated activation ranges)
            stop updating, so the last epochs train against the scales the int8 model will use; ``None``: never.
            torchvision's MobileNetV2 QAT recipe freezes them after 4 epochs.
        freeze_batchnorm_epoch: from this epoch on the BatchNorms normalise with (and stop updating) their running
            statistics, which conversion folds into the int8 weights; ``None``: never. torchvision's recipe: 3.
    """

    weights: str | None = None
    calibration: int = 64
    freeze_observers_epoch: int | None = 4
    freeze_batchnorm_epoch: int | None = 3

    def __post_init__(self) -> None:
        if self.calibration < 0:
            raise ValueError(f"QATSettings: calibration must be >= 0 images (0: none), got {self.calibration}")
        for name in ("freeze_observers_epoch", "freeze_batchnorm_epoch"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"QATSettings: {name} must be >= 0 or null (never), got {value}")


torch.serialization.add_safe_globals([QATSettings])


def traced_size(task: Any, datamodule: Any) -> tuple[int, int]:
    """The ``(H, W)`` the fake-quantised network is traced at: the training crop (segmentation), else the data's
    ``image_size``; a detector's graph takes only that size."""
    side = getattr(datamodule, "crop_size", None) or getattr(datamodule, "image_size", None)
    if not isinstance(side, int):
        raise ValueError(f"{type(task).__name__}: qat needs the training image size, but {type(datamodule).__name__} "
                         "has neither an integer crop_size nor image_size")
    return side, side


def build_network(task: Any, size: tuple[int, int]) -> FakeQuantizedNetwork:
    """``task.model`` traced at ``size`` and prepared for QAT; H and W stay dynamic where the task's exported graph
    has them dynamic (segmentation, classification)."""
    kind = task.task_name
    min_size = ClassifierGraph.min_size if kind == "classification" else MIN_SIZE
    return FakeQuantizedNetwork(task.model, size, dynamic_size=kind in ("segmentation", "classification"),
                                min_size=min_size)


def load_start_weights(task: Any, path: str) -> None:
    """``task.model`` <- the float checkpoint ``path``; a detector takes the checkpoint's anchors too (settings, not
    weights: e.g. fitted by its ``fit_anchors``), recorded in the hyper-parameters as ``fit_anchors`` records them."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.init_args.qat.weights={path!r} does not exist; give the float checkpoint "
                                "to start quantisation-aware training from")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    theirs = saved.get("hyper_parameters", {}).get("anchors") if isinstance(saved, dict) else None
    if theirs is not None and "anchors" in task.hparams and _plain(theirs) != _plain(task.hparams["anchors"]):
        task.model.set_anchor_settings(theirs if isinstance(theirs, AnchorSettings) else AnchorSettings(**theirs))
        task.hparams["anchors"] = _plain(theirs) if "_instantiator" in task.hparams else task.model.anchor_settings
        rank_zero_info(f"{type(task).__name__}: anchors from {path}: {_plain(theirs)}")
    load_checkpoint_weights(task.model, path)
    rank_zero_info(f"{type(task).__name__}: quantisation-aware training from {path}")


def _plain(value: Any) -> dict[str, Any]:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)


def calibrate(task: Any, datamodule: Any) -> None:
    """Calibrate the activation ranges of ``task``'s fresh QAT network on ``qat.calibration`` training images (a
    resumed run's ranges come from its checkpoint)."""
    network = task.qat_network
    if network is None or task.qat.calibration == 0 or bool(network.ranges_calibrated):
        return
    count = task.qat.calibration
    if datamodule is None:
        raise ValueError(f"{type(task).__name__}: qat.calibration={count} reads training images from the data module; "
                         "fit with a data module (trainer.fit(task, datamodule=...)) or set qat.calibration: 0")
    images = (task.prepare_images(batch.to(task.device)) for batch in training_images(datamodule, count))
    seen = network.calibrate(images)
    rank_zero_info(f"{type(task).__name__}: activation ranges calibrated on {seen} training images")


def update_freezing(network: FakeQuantizedNetwork, settings: QATSettings, epoch: int) -> None:
    """At the start of ``epoch``: freeze the observers and the BatchNorm statistics the settings say to."""
    if settings.freeze_observers_epoch is not None and epoch >= settings.freeze_observers_epoch:
        network.freeze_observers()
    if settings.freeze_batchnorm_epoch is not None and epoch >= settings.freeze_batchnorm_epoch:
        network.freeze_batchnorm()


def save(network: FakeQuantizedNetwork | None, checkpoint: dict[str, Any]) -> None:
    """Record the traced size, which loading the checkpoint traces at again before its state is read."""
    if network is not None:
        checkpoint["qat"] = {"image_size": list(network.image_size)}


def restore(task: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Outside Lightning's loading (the export command): trace ``task``'s network at the checkpoint's size and load
    its fake quantisers' state; ``task.model`` holds the checkpoint's weights already."""
    if task.qat_network is None:
        task.qat_network = build_network(task, tuple(checkpoint["qat"]["image_size"]))
    state = {key[len(PREFIX):]: value for key, value in checkpoint["state_dict"].items() if key.startswith(PREFIX)}
    task.qat_network.load_state_dict(state)
