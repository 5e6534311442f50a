"""Optimiser and learning-rate schedule from configuration, shared by every task.

The recipes of the reference implementations differ only in these knobs: SGD + cosine (torchvision's detection
reference scripts for ssdlite320, mmdet's SSDLite config), RMSProp (the TF Object Detection API's SSDLite sample
config), SGD + poly 0.9 (TF DeepLab's train.py). Warm-up is linear.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.optim import lr_scheduler


@dataclass
class Optimization:
    """Optimiser and schedule. ``lr`` is the peak rate, reached after ``warmup_epochs``.

    Weight decay is not applied to BatchNorm parameters and biases (as torchvision's reference scripts
    do with ``--norm-weight-decay 0``). Schedules step per iteration.

    ``reference_batch_size``: the global batch ``lr`` was tuned for. When set, the lr used is
    ``lr * global batch / reference_batch_size`` (the linear scaling rule, Goyal et al. 2017, Sec. 2.1), the
    global batch being devices x nodes x per-device batch x ``accumulate_grad_batches`` of the run, so a
    recipe gives the same lr per sample on 1 GPU or 8 without editing. ``None``: ``lr`` as given.

    ``max_nonfinite_steps``: training batches whose loss or gradients are not finite (NaN or inf) are skipped; this
    many in a row stop the run with an error naming the step, the loss terms and the lr
    (:mod:`mobilenetv2_dense.tasks.nonfinite`). 1 stops at the first, as torchvision's reference scripts do.

    Treated as a value (the tasks share a default instance): changes go through ``dataclasses.replace``, never by
    assigning a field. Not frozen, because Lightning rebuilds hyper-parameter dataclasses field by field when it
    writes ``hparams.yaml``.
    """

    optimizer: Literal["sgd", "rmsprop", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 4e-5
    schedule: Literal["cosine", "poly", "exponential", "constant"] = "cosine"
    poly_power: float = 0.9
    gamma_per_epoch: float = 0.98
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.001
    min_lr_ratio: float = 0.0
    reference_batch_size: int | None = None
    max_nonfinite_steps: int = 3

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimization.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optimization.weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_epochs < 0:
            raise ValueError(f"optimization.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 < self.warmup_factor <= 1:
            raise ValueError(f"optimization.warmup_factor must be in (0, 1] (the fraction of lr the warm-up starts "
                             f"from, e.g. 0.001), got {self.warmup_factor}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optimization.min_lr_ratio must be in [0, 1] (the floor as a fraction of lr), got "
                             f"{self.min_lr_ratio}")
        if self.reference_batch_size is not None and self.reference_batch_size < 1:
            raise ValueError(f"optimization.reference_batch_size must be a positive global batch size or null (no "
                             f"scaling), got {self.reference_batch_size}")
        if self.max_nonfinite_steps < 1:
            raise ValueError(f"optimization.max_nonfinite_steps must be >= 1 (how many non-finite training batches in "
                             f"a row stop the run; 1 stops at the first), got {self.max_nonfinite_steps}")

    def scaled(self, global_batch_size: int) -> Optimization:
        """This configuration with ``lr`` scaled to ``global_batch_size`` (unchanged without a reference)."""
        if self.reference_batch_size is None:
            return self
        return dataclasses.replace(self, lr=self.lr * global_batch_size / self.reference_batch_size)


# Tasks built in Python keep an Optimization in their hyper-parameters: checkpoints must load with weights_only=True.
torch.serialization.add_safe_globals([Optimization])


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights with decay; norm parameters and biases without. A parameter shared by two
    modules is taken once, as its first module says (a task's ``model`` comes before the fake-quantised graph of
    quantisation-aware training, whose containers hold the same tensors)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_norm = isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
            (no_decay if is_norm or name == "bias" else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: Optimization) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=False)
    if config.optimizer == "rmsprop":
        # TF's RMSProp: decay 0.9, epsilon 1.0 inside the square root (TF OD API SSD configs).
        return torch.optim.RMSprop(groups, lr=config.lr, alpha=0.9, eps=1.0, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"optimization.optimizer must be sgd, rmsprop or adamw, got {config.optimizer!r}")


def lr_factor(step: int, total_steps: int, warmup_steps: int, config: Optimization, steps_per_epoch: int = 1) -> float:
    """Multiplier of the peak lr at iteration ``step`` (0-based): the curve :func:`build_scheduler` follows."""
    if step < warmup_steps:
        alpha = step / max(1, warmup_steps)
        return config.warmup_factor * (1 - alpha) + alpha
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if config.schedule == "exponential":
        # torchvision's MobileNetV2 ImageNet recipe: lr x 0.98 every epoch.
        return config.gamma_per_epoch ** ((step - warmup_steps) / max(1, steps_per_epoch))
    if config.schedule == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    elif config.schedule == "poly":
        shape = (1 - progress) ** config.poly_power
    else:
        shape = 1.0
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, config: Optimization, *, total_steps: int,
                    steps_per_epoch: int) -> lr_scheduler.SequentialLR:
    """The per-step schedule of :func:`lr_factor`, from torch's schedulers, one after the other:

    ``LinearLR`` warm-up from ``warmup_factor`` to 1 over ``warmup_epochs`` (skipped when 0), then

    - cosine: ``CosineAnnealingLR`` to ``min_lr_ratio x lr`` at ``total_steps``, then ``ConstantLR`` holding that
      floor (torch's cosine would climb back up if a run goes past ``total_steps``);
    - poly: ``PolynomialLR`` to 0 at ``total_steps``; with ``min_lr_ratio > 0`` a ``LambdaLR`` of the same curve
      above the floor (``PolynomialLR`` has no floor);
    - exponential: ``ExponentialLR``, ``gamma_per_epoch`` spread over the steps of an epoch;
    - constant: ``ConstantLR`` at factor 1.

    Most of them update the lr recursively (``lr_t = lr_{t-1} x ratio``), so the lrs equal :func:`lr_factor` to
    1e-11 relative over 100k steps, not bit for bit (``tests/tasks/test_optim.py`` compares whole runs). The
    state (step, milestones, lengths) is the schedulers' ``state_dict``, so a resumed run keeps the length it
    was started with.
    """
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    decay_steps = max(1, total_steps - warmup_steps)
    phases: list[lr_scheduler.LRScheduler] = []
    if warmup_steps > 0:
        phases.append(lr_scheduler.LinearLR(optimizer, start_factor=config.warmup_factor, end_factor=1.0,
                                            total_iters=warmup_steps))
    floor = config.min_lr_ratio
    if config.schedule == "cosine":
        phases.append(lr_scheduler.CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=floor * config.lr))
        phases.append(lr_scheduler.ConstantLR(optimizer, factor=floor, total_iters=_FOREVER))
    elif config.schedule == "poly" and floor == 0:
        phases.append(lr_scheduler.PolynomialLR(optimizer, total_iters=decay_steps, power=config.poly_power))
    elif config.schedule == "poly":
        phases.append(lr_scheduler.LambdaLR(optimizer, _PolynomialAboveFloor(decay_steps, config.poly_power, floor)))
    elif config.schedule == "exponential":
        phases.append(lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma_per_epoch ** (1 / steps_per_epoch)))
    else:
        phases.append(lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0))
    milestones = [warmup_steps] if warmup_steps > 0 else []
    if config.schedule == "cosine":
        milestones.append(warmup_steps + decay_steps)
    return lr_scheduler.SequentialLR(optimizer, phases, milestones)


# ConstantLR returns to the full lr after total_iters steps; the floor after a cosine must hold for good.
_FOREVER = 2**62


@dataclass
class _PolynomialAboveFloor:
    """PolynomialLR's factor lifted onto ``floor`` (torch's has no floor). An object, not a lambda, so that
    LambdaLR's state_dict carries its fields and a resumed run keeps its length, as the other schedulers do."""

    total_iters: int
    power: float
    floor: float

    def __call__(self, step: int) -> float:
        return self.floor + (1 - self.floor) * (1 - min(step, self.total_iters) / self.total_iters) ** self.power
