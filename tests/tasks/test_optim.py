"""tasks/optim.py: exact learning rates against closed forms, which parameters decay, optimiser settings."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mobilenetv2_dense.tasks.base import BaseTask
from mobilenetv2_dense.tasks.optim import Optimization, build_optimizer, build_scheduler, lr_factor, parameter_groups


def lrs(config: Optimization, *, total_steps: int, steps_per_epoch: int) -> list[float]:
    """The lr the optimiser uses at each step 0 .. total_steps - 1 (scheduler stepped after every step)."""
    optimizer = build_optimizer(nn.Linear(2, 2), config)
    scheduler = build_scheduler(optimizer, config, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    return advance(optimizer, scheduler, total_steps)


def advance(optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    """The lr of each of ``steps`` optimiser steps, the scheduler stepped after each."""
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_linear_warmup_from_warmup_factor_to_the_peak() -> None:
    config = Optimization(lr=0.2, schedule="constant", warmup_epochs=2, warmup_factor=0.1)
    got = lrs(config, total_steps=12, steps_per_epoch=2)  # warm-up: 2 epochs x 2 steps = 4 steps
    expected = [0.2 * (0.1 + (1 - 0.1) * s / 4) for s in range(4)] + [0.2] * 8
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[0] == pytest.approx(0.02) and got[2] == pytest.approx(0.2 * 0.55)


@pytest.mark.parametrize("schedule, shape", [
    ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p))),
    ("poly", lambda p: (1 - p) ** 0.9),
    ("constant", lambda p: 1.0),
])
def test_decay_after_warmup_matches_the_closed_form(schedule: str, shape) -> None:
    total, warmup = 20, 4
    config = Optimization(lr=0.1, schedule=schedule, warmup_epochs=1, min_lr_ratio=0.05)
    got = lrs(config, total_steps=total, steps_per_epoch=warmup)
    for step in range(warmup, total):
        progress = (step - warmup) / (total - warmup)
        assert got[step] == pytest.approx(0.1 * (0.05 + 0.95 * shape(progress)), rel=1e-12), step
    assert got[warmup] == pytest.approx(0.1)  # the peak right after warm-up


def test_cosine_and_poly_reach_their_floor_at_the_last_step() -> None:
    assert lr_factor(100, 100, 0, Optimization(schedule="cosine", min_lr_ratio=0.0)) == pytest.approx(0.0, abs=1e-15)
    assert lr_factor(100, 100, 0, Optimization(schedule="poly", min_lr_ratio=0.01)) == pytest.approx(0.01)
    assert lr_factor(50, 100, 0, Optimization(schedule="cosine", min_lr_ratio=0.0)) == pytest.approx(0.5)
    assert lr_factor(50, 100, 0, Optimization(schedule="poly", poly_power=0.9)) == pytest.approx(0.5 ** 0.9)


def test_exponential_is_gamma_per_epoch_counted_from_the_end_of_warmup() -> None:
    """torchvision's MobileNetV2 ImageNet recipe: lr x 0.98 per epoch, applied smoothly per step."""
    config = Optimization(lr=0.045, schedule="exponential", gamma_per_epoch=0.98, warmup_epochs=1)
    got = lrs(config, total_steps=40, steps_per_epoch=10)
    for step in (10, 15, 20, 39):
        assert got[step] == pytest.approx(0.045 * 0.98 ** ((step - 10) / 10), rel=1e-12)


def test_no_weight_decay_on_norms_and_biases_and_none_for_frozen_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4, 2),
                          nn.LayerNorm(2), nn.Linear(2, 2, bias=False), nn.Linear(2, 2))
    model[7].requires_grad_(False)  # frozen: in neither group
    decay, no_decay = parameter_groups(model, weight_decay=4e-5)
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(decay["params"]) == ids([model[0].weight, model[4].weight, model[6].weight])
    assert ids(no_decay["params"]) == ids([model[0].bias, model[1].weight, model[1].bias, model[2].weight,
                                           model[2].bias, model[4].bias, model[5].weight, model[5].bias])


@pytest.mark.parametrize("name, cls, expected", [
    ("sgd", torch.optim.SGD, dict(lr=0.15, momentum=0.9, nesterov=False)),
    # TF's RMSProp as the TF OD API SSD configs set it: decay 0.9, epsilon 1.0, momentum 0.9.
    ("rmsprop", torch.optim.RMSprop, dict(lr=0.15, alpha=0.9, eps=1.0, momentum=0.9, centered=False)),
    ("adamw", torch.optim.AdamW, dict(lr=0.15)),
])
def test_optimizer_hyper_parameters(name: str, cls: type, expected: dict) -> None:
    optimizer = build_optimizer(nn.Linear(2, 2), Optimization(optimizer=name, lr=0.15, weight_decay=1e-4))
    assert type(optimizer) is cls
    for group in optimizer.param_groups:
        for key, value in expected.items():
            assert group[key] == value, (key, group[key])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]


@pytest.mark.parametrize("kwargs, match", [(dict(lr=0.0), "lr"), (dict(weight_decay=-1.0), "weight_decay"),
                                           (dict(warmup_epochs=-1.0), "warmup_epochs")])
def test_invalid_settings_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Optimization(**kwargs)


# ------------------------------------------------------------------------------------------- through a Trainer
class TinyTask(BaseTask):
    def __init__(self, optimization: Optimization) -> None:
        super().__init__(optimization=optimization)
        self.model = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.model(x), y)


class RecordLR(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_trainer_steps_warmup_and_cosine_per_iteration() -> None:
    """BaseTask.configure_optimizers: 3 epochs x 4 batches, half an epoch (2 steps) of warm-up, cosine to 0."""
    data = DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=2)
    record = RecordLR()
    config = Optimization(optimizer="sgd", lr=0.4, schedule="cosine", warmup_epochs=0.5, warmup_factor=0.25)
    L.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[record]).fit(TinyTask(config), data)
    total, warmup = 12, 2
    expected = [0.4 * (0.25 + 0.75 * s / warmup) for s in range(warmup)]
    expected += [0.4 * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) for s in range(warmup, total)]
    assert record.lrs == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------- torch's schedulers = lr_factor, the old LambdaLR's formula
@pytest.mark.parametrize("schedule", ["cosine", "poly", "exponential", "constant"])
@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.05])
@pytest.mark.parametrize("total, steps_per_epoch, warmup_epochs", [(3000, 100, 1.5), (2000, 250, 0.0), (6, 4, 2.0)],
                         ids=["warmup", "no-warmup", "warmup-longer-than-the-run"])
def test_whole_run_equals_the_old_formula(schedule, min_lr_ratio, total, steps_per_epoch, warmup_epochs) -> None:
    """Every step of a run, and 20 steps past its end, within 1e-9 relative (torch's schedulers update the lr
    recursively, so not bit for bit: the largest difference seen is 1e-11 over 100k steps)."""
    config = Optimization(lr=0.07, schedule=schedule, min_lr_ratio=min_lr_ratio, warmup_epochs=warmup_epochs,
                          warmup_factor=0.001, poly_power=0.9, gamma_per_epoch=0.98)
    warmup = int(round(warmup_epochs * steps_per_epoch))
    optimizer = build_optimizer(nn.Linear(2, 2), config)
    scheduler = build_scheduler(optimizer, config, total_steps=total, steps_per_epoch=steps_per_epoch)
    got = []
    for _ in range(total + 20):
        got.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for step, lrs_at_step in enumerate(got):
        expected = 0.07 * lr_factor(step, total, warmup, config, steps_per_epoch)
        assert lrs_at_step == pytest.approx([expected] * 2, rel=1e-9, abs=0), step


@pytest.mark.parametrize("schedule, min_lr_ratio", [("cosine", 0.0), ("poly", 0.0), ("poly", 0.1),
                                                    ("exponential", 0.0), ("constant", 0.0)])
def test_state_dict_round_trip_continues_the_schedule(schedule: str, min_lr_ratio: float, tmp_path) -> None:
    """Saved mid-run (as a checkpoint does, loadable with weights_only=True) and restored into freshly built
    ones, the optimiser and scheduler go on with the lrs of the uninterrupted run, whose length the state
    carries (a resume with another max_epochs keeps it)."""
    config = Optimization(lr=0.1, schedule=schedule, min_lr_ratio=min_lr_ratio, warmup_epochs=1)

    def build(total_steps: int = 40):
        optimizer = build_optimizer(nn.Linear(2, 2), config)
        return optimizer, build_scheduler(optimizer, config, total_steps=total_steps, steps_per_epoch=5)

    straight = advance(*build(), 45)
    optimizer, scheduler = build()
    first = advance(optimizer, scheduler, 12)  # past the warm-up milestone
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    optimizer, scheduler = build(total_steps=80)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    assert first + advance(optimizer, scheduler, 33) == straight


@pytest.mark.parametrize("kwargs, match", [(dict(warmup_factor=0.0), "warmup_factor must be in"),
                                           (dict(min_lr_ratio=1.5), "min_lr_ratio must be in")])
def test_settings_torch_schedulers_cannot_follow_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Optimization(**kwargs)
