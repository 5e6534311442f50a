"""Non-finite losses, gradients and weights: skip the step, stop after too many in a row, never save them.

Plain Lightning trains on through a NaN loss: the optimiser step turns the weights into NaN, the run goes to its
end, exits with status 0 and overwrites ``last.ckpt`` with them. torchvision's reference scripts (and detectron2)
stop at the first non-finite loss instead. :class:`NonFiniteGuard` (held by every task, see
:class:`mobilenetv2_dense.tasks.base.BaseTask`) does this:

- a training batch whose loss (any term of it) is not finite is skipped: no weight, optimiser-state or BatchNorm
  running-statistic changes (the lr schedule and the global step go on), and a warning names the step, the terms
  and the lr; so is an optimiser step whose gradients are not finite (its finite forward pass's BatchNorm
  statistics stay), except under fp16 AMP, whose ``GradScaler`` skips those steps and lowers its scale by itself:
  these are not failures;
- after ``optimization.max_nonfinite_steps`` such batches in a row the run stops with :class:`NonFiniteError`
  (hence a non-zero exit status from ``train_task.py``); the message names the step, the terms, the lr and whether
  the weights themselves are already non-finite;
- the end of ``fit`` reports how many batches were skipped;
- :func:`check_checkpoint` refuses to write a checkpoint holding a non-finite tensor, so the checkpoint files on disk
  keep the last finite state.

Under DDP every decision is reduced over the ranks (a batch is skipped everywhere when its loss is non-finite on one
rank), so the ranks never diverge and all of them stop at the same step. A skipped batch still runs a backward pass
(of a zero loss on every parameter): Lightning refuses a ``training_step`` that returns ``None`` under DDP, and each
rank's gradient hooks must fire for DDP's all-reduce; its zero gradients are then dropped before the optimiser step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor


class NonFiniteError(FloatingPointError):
    """A run stopped on non-finite losses or gradients, or a checkpoint refused for non-finite tensors."""


_ADVICE = ("lower optimization.lr, lengthen optimization.warmup_epochs or clip gradients "
           "(--trainer.gradient_clip_val 1.0), and train again from the last checkpoint's weights or from the start")


class NonFiniteGuard:
    """Counts non-finite training batches of one task; skips them and stops after ``max_steps`` in a row.

    The task calls :meth:`remember` before each training forward pass, :meth:`skip_loss` on its loss terms,
    :meth:`check_gradients` before each optimiser step and :meth:`report` at the end of training.
    """

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps
        self.in_a_row = 0  # non-finite batches since the last finite optimiser step
        self.skipped = 0  # batches (and optimiser steps) skipped in this fit
        self.batches = 0  # training batches seen in this fit
        self._skip_in_step = 0  # batches of the optimiser step being accumulated: skipped, kept
        self._kept_in_step = 0
        self._saved_buffers: list[Tensor] = []

    def start(self) -> None:
        self.in_a_row = self.skipped = self.batches = self._skip_in_step = self._kept_in_step = 0

    # ----------------------------------------------------------------------------------------------- per batch
    def remember(self, task: L.LightningModule) -> None:
        """Keep the network's buffers (BatchNorm running statistics and counters): a non-finite batch's forward pass
        has already updated them when its loss is seen, and :meth:`skip_loss` puts them back."""
        self.batches += 1
        buffers = [b.detach() for b in task.model.buffers()]
        if [b.shape for b in self._saved_buffers] != [b.shape for b in buffers]:
            self._saved_buffers = [b.clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self._saved_buffers, buffers)  # one fused copy (torch.optim's own helper)

    def skip_loss(self, task: L.LightningModule, losses: Mapping[str, Tensor]) -> Tensor | None:
        """``None`` when every term of ``losses`` is finite on every rank; else the loss to return from
        ``training_step`` instead (a zero that reaches every trained parameter, see the module docstring).

        Raises :class:`NonFiniteError` at the ``max_steps``-th non-finite batch in a row.
        """
        values = torch.stack([value.detach().float().reshape(()) for value in losses.values()])
        finite = values.isfinite().tolist()  # the one device sync of a finite step
        local = not all(finite)
        if not _any_rank(task, local):
            self._kept_in_step += 1
            return None
        self._skip_in_step += 1
        bad = sorted(((name, value) for name, value, ok in zip(losses, values.tolist(), finite) if not ok),
                     key=lambda term: term[0] == "loss")  # the terms first, their sum last
        terms = ", ".join(f"{name}={value:g}" for name, value in bad) if local else (
            "on another process")
        self._restore(task)
        self._failed(task, f"the training loss is not finite ({terms})")
        trained = [p for p in task.parameters() if p.requires_grad]
        return torch.stack([p.sum() for p in trained]).sum() * 0.0 if trained else None

    def check_gradients(self, task: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        """Before the optimiser step (after AMP's unscaling): drop the gradients of a step whose batches were all
        skipped, or whose gradients are not finite (then count it as :meth:`skip_loss` counts a loss). Under fp16 AMP
        the ``GradScaler`` checks and skips non-finite gradients itself."""
        skipped_all = self._skip_in_step > 0 and self._kept_in_step == 0
        self._skip_in_step = self._kept_in_step = 0
        if skipped_all:
            optimizer.zero_grad(set_to_none=True)
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if getattr(task.trainer.precision_plugin, "scaler", None) is not None or not grads:
            self.in_a_row = 0
            return
        # the largest magnitude: inf or nan exactly when one value is (a 2-norm overflows on large finite values)
        local = not bool(torch.nn.utils.get_total_norm(grads, norm_type="inf").isfinite())
        if not _any_rank(task, local):
            self.in_a_row = 0
            return
        names = _nonfinite_gradients(task) if local else ["on another process"]
        optimizer.zero_grad(set_to_none=True)
        self._failed(task, f"the gradients are not finite ({_listed(names)})")

    def report(self, task: L.LightningModule) -> None:
        """At the end of training: how many batches were skipped, if any."""
        if self.skipped:
            rank_zero_warn(f"{type(task).__name__}: {self.skipped} of {self.batches} training batches were skipped "
                           "because their loss or gradients were not finite (at most "
                           f"optimization.max_nonfinite_steps - 1 = {self.max_steps - 1} in a row)")

    # ----------------------------------------------------------------------------------------------- internals
    def _restore(self, task: L.LightningModule) -> None:
        buffers = [b.detach() for b in task.model.buffers()]
        if self._saved_buffers and [b.shape for b in self._saved_buffers] == [b.shape for b in buffers]:
            torch._foreach_copy_(buffers, self._saved_buffers)

    def _failed(self, task: L.LightningModule, what: str) -> None:
        """Count one non-finite batch (or optimiser step); warn, or raise at the ``max_steps``-th in a row."""
        self.in_a_row += 1
        self.skipped += 1
        trainer = task.trainer
        where = (f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
                 f"{trainer.fit_loop.epoch_loop.batch_idx})")
        lrs = sorted({group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups})
        lr = f"lr {', '.join(f'{value:.4g}' for value in lrs)}"
        if self.in_a_row < self.max_steps:
            rank_zero_warn(f"{type(task).__name__}: skipped the batch at {where}: {what}; {lr} "
                           f"({self.in_a_row} in a row; the run stops at optimization.max_nonfinite_steps="
                           f"{self.max_steps})")
            return
        state = task.model.state_dict()
        broken = nonfinite_tensors(state)
        weights = (f"The weights are not finite themselves ({len(broken)} of {len(list(_floating(state, '')))} "
                   f"tensors: {_listed(broken)}): an earlier step with a finite loss overflowed them. " if broken else
                   "The skipped batches changed no weight. ")
        raise NonFiniteError(
            f"{type(task).__name__}: training stopped at {where}: {what}; {lr}. That is {self.in_a_row} non-finite "
            f"{'batch' if self.in_a_row == 1 else 'batches'} in a row (optimization.max_nonfinite_steps="
            f"{self.max_steps}). "
            f"{weights}No checkpoint with non-finite tensors is written: the checkpoint files on disk keep the "
            f"last finite state. To go on: {_ADVICE}.")


def _any_rank(task: L.LightningModule, decision: bool) -> bool:
    """``decision`` or-ed over the DDP ranks (a collective: every rank calls it at the same point)."""
    trainer = task._trainer
    return decision if trainer is None else trainer.strategy.reduce_boolean_decision(decision, all=False)


def _nonfinite_gradients(task: L.LightningModule) -> list[str]:
    return [name for name, p in task.named_parameters() if p.grad is not None and not bool(p.grad.isfinite().all())]


def _listed(names: list[str], first: int = 3) -> str:
    """The first names, and how many there are when some are left out."""
    shown = ", ".join(names[:first])
    return f"{shown}, ... {len(names)} in all" if len(names) > first else shown


def nonfinite_tensors(tensors: Any, prefix: str = "") -> list[str]:
    """Names (``a.b.0.c`` paths) of the floating-point tensors in a nested dict / list that hold a NaN or an inf."""
    found = list(_floating(tensors, prefix))
    if not found:
        return []
    finite = torch.stack([tensor.isfinite().all().cpu() for _, tensor in found]).tolist()
    return [name for (name, _), ok in zip(found, finite) if not ok]


def _floating(value: Any, name: str) -> Iterator[tuple[str, Tensor]]:
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex():
            yield name, value.detach()
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _floating(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _floating(item, f"{name}.{i}" if name else str(i))


def check_checkpoint(task: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Raise :class:`NonFiniteError` before Lightning writes ``checkpoint`` when its weights (``state_dict``) or
    optimiser states hold a non-finite tensor, naming them: the file it would replace keeps a finite state."""
    weights = checkpoint.get("state_dict", {})
    broken = nonfinite_tensors(weights, "state_dict")
    broken_states = nonfinite_tensors(checkpoint.get("optimizer_states", []), "optimizer_states")
    if not broken and not broken_states:
        return
    parts = []
    if broken:
        parts.append(f"{len(broken)} of {len(list(_floating(weights, '')))} weight tensors are not finite "
                     f"({_listed(broken)})")
    if broken_states:
        parts.append(f"{len(broken_states)} optimiser-state tensors are not finite ({_listed(broken_states)})")
    where = "" if task._trainer is None else (
        f" at global step {task.trainer.global_step} (epoch {task.trainer.current_epoch})")
    raise NonFiniteError(
        f"{type(task).__name__}: refused to write a checkpoint{where}: {'; '.join(parts)}. The checkpoint files "
        f"already on disk keep the last finite state. To go on: {_ADVICE}.")
