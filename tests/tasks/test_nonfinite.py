"""Non-finite losses, gradients and weights (``mobilenetv2_dense.tasks.nonfinite``): a bad batch is skipped and
counted, too many in a row stop the run with a non-zero exit status, and no checkpoint with NaN or inf is written.

NaN images stand in for whatever makes a loss non-finite (a diverging lr, a corrupt sample): they make every loss
term NaN at a chosen step, on a chosen rank. A diverging lr on these tiny sets overflows the BatchNorm statistics
while the training loss stays finite (BatchNorm normalises the batch), which the checkpoint test stands in for.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.tasks.nonfinite import NonFiniteError
from mobilenetv2_dense.tasks.optim import Optimization
from tests.conftest import joint_options
from tests.deploy.runs import DET_CONFIG, QUIET, SEG_CONFIG, SEG_DATA, det_data
from tests.tasks.test_preemption import CONFIG, ROOT, checkpoints, child_env, tiny

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS_PER_EPOCH = 4  # tiny(): 16 training images, batch 4


class PoisonImages(L.Callback):
    """Sets the images of the training batches at ``steps`` (global steps; on ``rank`` only, or every rank) to NaN,
    and keeps the task's state before and after each of them."""

    def __init__(self, steps: list[int], rank: int | None = None) -> None:
        self.steps, self.rank = steps, rank
        self.before: dict[int, dict[str, torch.Tensor]] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step in self.steps and self.rank in (None, trainer.global_rank):
            batch[0].fill_(math.nan)
            self.before[trainer.global_step] = state(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step - 1 in self.before:
            self.after[trainer.global_step - 1] = state(pl_module)


class PoisonGradients(PoisonImages):
    """Sets one gradient value to NaN after the backward pass of the batches at ``steps`` (finite losses)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step in self.steps:
            self.before[trainer.global_step] = state(pl_module)

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step in self.steps:
            pl_module.model.classifier[-1].weight.grad[0, 0] = math.nan


def state(task: L.LightningModule) -> dict[str, torch.Tensor]:
    """Weights and buffers (BatchNorm statistics and counters) of the task, copied."""
    return {name: value.detach().clone() for name, value in task.state_dict().items()}


def fit_with(callbacks: list[L.Callback], *args: str, epochs: int = 1) -> L.Trainer:
    """The classification demo config (or the one ``args`` give) fitted in this process, ``callbacks`` first."""
    cli = cli_main(["--config", CONFIG, *args, "--trainer.max_epochs", str(epochs)], run=False)
    cli.trainer.callbacks[:0] = callbacks
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli.trainer


# ------------------------------------------------------------------------------------------ stop, exit status
def test_nonfinite_losses_in_a_row_stop_the_run_with_a_nonzero_exit_status(tiny_shapes_folder, tmp_path):
    """Epoch 0 is clean and writes last.ckpt; from step 4 every loss is NaN: steps 4 and 5 are skipped with a
    warning, step 6 (the third in a row, the default) stops the run, and last.ckpt still holds epoch 0."""
    poison = ["--trainer.callbacks+=tests.tasks.test_nonfinite.PoisonImages",
              f"--trainer.callbacks.steps=[{STEPS_PER_EPOCH}, 5, 6, 7]"]
    child = subprocess.run([sys.executable, str(ROOT / "train_task.py"), "fit", "--config", CONFIG,
                            *tiny(tiny_shapes_folder), *poison], cwd=tmp_path, env=child_env(), capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == 1, child.stderr[-3000:]
    message = next(line for line in child.stderr.splitlines() if line.startswith("mobilenetv2_dense.tasks.nonfinite"))
    assert "NonFiniteError: ClassificationTask: training stopped at global step 6 (epoch 1, batch 2)" in message
    assert "the training loss is not finite (loss=nan); lr " in message
    assert "3 non-finite batches in a row (optimization.max_nonfinite_steps=3)" in message
    assert "The skipped batches changed no weight" in message
    for step, in_a_row in ((4, 1), (5, 2)):
        assert f"skipped the batch at global step {step} (epoch 1, batch {step - 4}): the training loss is not " \
               f"finite (loss=nan); lr" in child.stderr and f"({in_a_row} in a row;" in child.stderr

    last = [p for p in checkpoints(tmp_path) if p.name == "last.ckpt"]
    assert len(last) == 1
    saved = torch.load(last[0], weights_only=False)
    assert saved["global_step"] == STEPS_PER_EPOCH
    assert all(v.isfinite().all() for v in saved["state_dict"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------ isolated batches
def test_isolated_nonfinite_batches_are_skipped_and_counted(tiny_shapes_folder, tmp_path, monkeypatch):
    """A NaN batch (step 1) and a NaN gradient (step 3), not in a row: the run ends normally, the skipped steps
    change no weight (the NaN batch no BatchNorm statistic either), and the end of fit says how many were skipped."""
    monkeypatch.chdir(tmp_path)
    images, gradients = PoisonImages([1]), PoisonGradients([3])
    with pytest.warns(UserWarning) as warned:
        trainer = fit_with([images, gradients], *tiny(tiny_shapes_folder))
    assert trainer.state.finished and trainer.global_step == STEPS_PER_EPOCH
    parameters = {name for name, _ in trainer.lightning_module.named_parameters()}
    for poison, kept in ((images, set(images.before[1])), (gradients, parameters)):  # a finite forward's BN stats stay
        step = poison.steps[0]
        changed = [k for k in kept if not torch.equal(poison.before[step][k], poison.after[step][k])]
        assert not changed, (step, changed[:5])
    assert not any(torch.equal(v, gradients.before[3][k]) for k, v in images.after[1].items()
                   if k.endswith("running_mean")), "step 2 (finite) trains as usual"
    messages = [str(w.message) for w in warned]
    assert any("skipped the batch at global step 1 (epoch 0, batch 1): the training loss is not finite (loss=nan)"
               in m for m in messages)
    assert any("skipped the batch at global step 3 (epoch 0, batch 3): the gradients are not finite "
               "(model.classifier.1.weight); lr" in m for m in messages)
    assert any(m.startswith("ClassificationTask: 2 of 4 training batches were skipped because their loss or "
                            "gradients were not finite") for m in messages)
    last = torch.load(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt", weights_only=False)
    assert all(v.isfinite().all() for v in last["state_dict"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------------------------- checkpoints
class OverflowWeights(L.Callback):
    """Fills one weight with inf after the last batch of epoch 1 (what an overflowing step does), and keeps the
    bytes of every checkpoint file at the start of that epoch."""

    def __init__(self) -> None:
        self.files: dict[Path, bytes] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            self.files = {p: p.read_bytes() for p in Path(trainer.checkpoint_callback.dirpath).iterdir()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == 2 * STEPS_PER_EPOCH:
            with torch.no_grad():
                pl_module.model.classifier[-1].weight[0, 0] = math.inf


def test_a_checkpoint_with_nonfinite_weights_is_refused_and_the_files_on_disk_kept(tiny_shapes_folder, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    overflow = OverflowWeights()
    with pytest.raises(NonFiniteError, match=r"refused to write a checkpoint at global step 8 \(epoch 1\): 1 of \d+ "
                       r"weight tensors are not finite \(state_dict\.model\.classifier\.1\.weight\)"):
        fit_with([overflow], *tiny(tiny_shapes_folder), epochs=2)
    assert {p.name for p in overflow.files} >= {"last.ckpt"}
    folder = next(iter(overflow.files)).parent
    assert {p: p.read_bytes() for p in folder.iterdir()} == overflow.files  # nothing written, nothing left over


# ---------------------------------------------------------------------------------------------------- AMP
def test_amp_scaler_skips_are_not_failures_and_a_nonfinite_loss_is_skipped_under_amp(tiny_shapes_folder, tmp_path,
                                                                                       monkeypatch):
    """fp16 AMP with a GradScaler (on the CPU here): a scale far too large makes the gradients inf for several
    steps in a row; the scaler skips those steps and lowers its scale, which is not a failure. A NaN loss under AMP
    is skipped as without it."""
    monkeypatch.chdir(tmp_path)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    poison = PoisonImages([6])
    cli = cli_main(["--config", CONFIG, *tiny(tiny_shapes_folder), "--trainer.precision", "null"], run=False)
    cli.trainer.strategy.precision_plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    cli.trainer.callbacks.insert(0, poison)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.state.finished and cli.trainer.global_step == 2 * STEPS_PER_EPOCH
    assert scaler.get_scale() <= 2.0**40 / 2**4, "the scaler skipped more steps in a row than the limit"
    assert cli.model.nonfinite.skipped == 1
    assert all(torch.equal(v, poison.after[6][k]) for k, v in poison.before[6].items())


# ---------------------------------------------------------------------------------------------------- tasks
TASK_RUNS = {
    "detection": (lambda coco: ["--config", DET_CONFIG, *det_data(coco), "--model.init_args.fit_anchors", "false",
                                "--model.init_args.backbone.width_mult", "0.35", *QUIET],
                  "bbox_regression=nan, classification=nan, loss=nan"),
    "segmentation": (lambda coco: ["--config", SEG_CONFIG, *SEG_DATA, "--model.init_args.backbone.width_mult", "0.35",
                                   *QUIET], "ce=nan, dice=nan, loss=nan"),
    "joint": (lambda coco: [*joint_options(coco)],
              "detection=nan, bbox_regression=nan, classification=nan, segmentation=nan, ce=nan, dice=nan, loss=nan"),
}


@pytest.mark.parametrize("task", TASK_RUNS)
def test_every_task_names_its_nonfinite_loss_terms(task, shapes_coco, tmp_path, monkeypatch):
    """``max_nonfinite_steps: 1`` stops at the first non-finite loss, as torchvision's reference scripts do."""
    monkeypatch.chdir(tmp_path)
    options, terms = TASK_RUNS[task]
    with pytest.raises(NonFiniteError, match=rf"training stopped at global step 0 .*\({terms}\); lr "):
        fit_with([PoisonImages([0])], *options(shapes_coco), "--model.init_args.optimization.max_nonfinite_steps", "1",
                 "--trainer.limit_val_batches", "0")


def test_max_nonfinite_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="optimization.max_nonfinite_steps must be >= 1"):
        Optimization(max_nonfinite_steps=0)


# ---------------------------------------------------------------------------------------------------- DDP
class RecordSkips(L.Callback):
    """Each rank appends ``step skipped-so-far first-weight-sum`` to ``folder/rank{r}.txt`` after every batch (DDP
    children cannot return them)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        weight = float(next(pl_module.parameters()).detach().sum())
        with open(self.folder / f"rank{trainer.global_rank}.txt", "a") as file:
            file.write(f"{trainer.global_step - 1} {pl_module.nonfinite.skipped} {weight!r}\n")


def test_ddp_ranks_skip_and_stop_together(tiny_shapes_folder, tmp_path, monkeypatch):
    """Two CPU processes (gloo), NaN images on rank 1 only: both ranks skip step 1 (no hang in DDP's gradient
    all-reduce, the same weights after), and both stop at step 5, the third NaN batch in a row."""
    monkeypatch.chdir(tmp_path)
    records = tmp_path / "records"
    records.mkdir()
    cli = cli_main(["--config", CONFIG, *tiny(tiny_shapes_folder, epochs=3), "--trainer.strategy", "ddp_fork",
                    "--trainer.devices", "2", "--trainer.accelerator", "cpu"], run=False)
    cli.trainer.callbacks[:0] = [PoisonImages([1, 3, 4, 5], rank=1), RecordSkips(records)]
    with pytest.raises(Exception, match=r"training stopped at global step 5 \(epoch 2, batch 1\)"):
        cli.trainer.fit(cli.model, cli.datamodule)
    rank0, rank1 = ((records / f"rank{r}.txt").read_text().splitlines() for r in (0, 1))
    assert rank0 == rank1
    assert [line.split()[:2] for line in rank0] == [["0", "0"], ["1", "1"], ["2", "1"], ["3", "2"], ["4", "3"]]
