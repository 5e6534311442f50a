"""``fit --ckpt_path``: resuming at an epoch boundary reproduces the uninterrupted run to the last bit (CPU, fixed
seed), and restores optimiser, LR schedule, epoch and step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mobilenetv2_dense.commands.cli import cli_main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "mobilenetv2_shapes_classification.yaml")
STEPS_PER_EPOCH = 4  # 16 training images (4 classes x 4), batch 4
KEEP_EVERY_EPOCH = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                    "--trainer.callbacks.dirpath=every_epoch", "--trainer.callbacks.filename=epoch{epoch}",
                    "--trainer.callbacks.auto_insert_metric_name=false",
                    "--trainer.callbacks.save_top_k=-1", "--trainer.callbacks.every_n_epochs=1"]


def fit(root: Path, *args: str, workers: int = 0, epochs: int = 2):
    # the classification model has dropout: the global torch RNG drives shuffle, augmentation and dropout
    return cli_main(["fit", "--config", CONFIG, "--data.root", str(root), "--data.image_size", "32",
                     "--data.batch_size", "4", "--data.num_workers", str(workers),
                     "--model.backbone.width_mult", "0.35", "--trainer.max_epochs", str(epochs),
                     "--trainer.limit_val_batches", "1",
                     "--trainer.accelerator", "cpu", *args])  # exactness is a CPU claim (GPU kernels may not be)


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_at_an_epoch_boundary_equals_the_uninterrupted_run(tiny_shapes_folder, tmp_path, monkeypatch, workers):
    monkeypatch.chdir(tmp_path)
    straight = fit(tiny_shapes_folder, *KEEP_EVERY_EPOCH, workers=workers, epochs=3)
    last = torch.load(Path(straight.trainer.checkpoint_callback.dirpath) / "last.ckpt")
    assert last["global_step"] == 3 * STEPS_PER_EPOCH  # last.ckpt is the last epoch, improved or not

    resumed = fit(tiny_shapes_folder, "--ckpt_path", str(tmp_path / "every_epoch" / "epoch0.ckpt"), workers=workers,
                  epochs=3)
    assert resumed.trainer.global_step == 3 * STEPS_PER_EPOCH
    expected, got = straight.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_resume_restores_optimizer_schedule_epoch_and_step(tiny_shapes_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit(tiny_shapes_folder, *KEEP_EVERY_EPOCH, epochs=3)
    path = tmp_path / "every_epoch" / "epoch1.ckpt"
    saved = torch.load(path, weights_only=False)
    # max_epochs=2: the run is complete once restored, so what the trainer holds is what it restored
    resumed = fit(tiny_shapes_folder, "--ckpt_path", str(path), epochs=2).trainer
    assert resumed.current_epoch == 2 and resumed.global_step == 2 * STEPS_PER_EPOCH
    optimizer = resumed.optimizers[0].state_dict()
    assert optimizer["param_groups"] == saved["optimizer_states"][0]["param_groups"]
    for index, state in saved["optimizer_states"][0]["state"].items():
        assert all(torch.equal(state[key], optimizer["state"][index][key]) for key in state)
    assert resumed.lr_scheduler_configs[0].scheduler.state_dict() == saved["lr_schedulers"][0]
    assert resumed.optimizers[0].param_groups[0]["lr"] == saved["optimizer_states"][0]["param_groups"][0]["lr"]
