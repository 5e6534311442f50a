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


@dataclass
class Optimization:
    """Optimiser and schedule. ``lr`` is the peak rate, reached after ``warmup_epochs``.

    Weight decay is not applied to BatchNorm parameters and biases (as torchvision's reference scripts
    do with ``--norm-weight-decay 0``). Schedules step per iteration.

    ``reference_batch_size``: the global batch ``lr`` was tuned for. When set, the lr used is
    ``lr * global batch / reference_batch_size`` (the linear scaling rule, Goyal et al. 2017, Sec. 2.1), the
    global batch being devices x nodes x per-device batch x ``accumulate_grad_batches`` of the run, so a
    recipe gives the same lr per sample on 1 GPU or 8 without editing. ``None``: ``lr`` as given.
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

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimization.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optimization.weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_epochs < 0:
            raise ValueError(f"optimization.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.reference_batch_size is not None and self.reference_batch_size < 1:
            raise ValueError(f"optimization.reference_batch_size must be a positive global batch size or null (no "
                             f"scaling), got {self.reference_batch_size}")

    def scaled(self, global_batch_size: int) -> Optimization:
        """This configuration with ``lr`` scaled to ``global_batch_size`` (unchanged without a reference)."""
        if self.reference_batch_size is None:
            return self
        return dataclasses.replace(self, lr=self.lr * global_batch_size / self.reference_batch_size)


# Tasks built in Python keep an Optimization in their hyper-parameters: checkpoints must load with weights_only=True.
torch.serialization.add_safe_globals([Optimization])


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights with decay; norm parameters and biases without."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
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
    """Multiplier of the peak lr at iteration ``step`` (0-based)."""
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
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, config, steps_per_epoch))
