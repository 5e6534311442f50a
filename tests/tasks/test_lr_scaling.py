"""optimization.reference_batch_size: the lr of a run is scaled by its real global batch (linear scaling rule)."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.tasks.optim import Optimization
from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class TinyData(L.LightningDataModule):
    """16 random 32x32 images and masks in batches of ``batch_size``."""

    num_classes = 3

    def __init__(self, batch_size: int = 2) -> None:
        super().__init__()
        self.batch_size = batch_size
        generator = torch.Generator().manual_seed(0)
        self.dataset = TensorDataset(torch.randn(16, 3, 32, 32, generator=generator),
                                     torch.randint(0, 3, (16, 32, 32), generator=generator))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size)


class RecordLR(L.Callback):
    """Writes each rank's world size and initial lr to ``folder/rank{r}.txt`` (DDP children cannot return them)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        group = trainer.optimizers[0].param_groups[0]
        (self.folder / f"rank{trainer.global_rank}.txt").write_text(f"{trainer.world_size} {group['initial_lr']}")


def fit(reference: int | None, *, batch_size: int = 2, accumulate: int = 1, tmp_path: Path, **trainer_kwargs):
    task = SegmentationTask(num_classes=3, backbone=BackboneSettings(width_mult=0.35), optimization=Optimization(
        lr=0.1, schedule="constant", reference_batch_size=reference))
    trainer_kwargs = {"accelerator": "cpu", "devices": 1, **trainer_kwargs}
    trainer = L.Trainer(max_steps=1, accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[RecordLR(tmp_path)],
                        **trainer_kwargs)
    trainer.fit(task, datamodule=TinyData(batch_size))
    return [tuple(float(v) for v in f.read_text().split()) for f in sorted(tmp_path.glob("rank*.txt"))]


def test_lr_scales_with_per_device_batch_and_accumulation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert fit(8, batch_size=2, accumulate=3, tmp_path=tmp_path) == [(1, pytest.approx(0.1 * 6 / 8))]
    assert ("lr 0.075 = 0.1 x global batch 6 / reference batch 8 (global batch = 2 per device x 1 device(s) x "
            "1 node(s) x 3 accumulated") in caplog.text


def test_lr_is_unscaled_when_switched_off(tmp_path: Path) -> None:
    assert fit(None, batch_size=2, accumulate=3, tmp_path=tmp_path) == [(1, pytest.approx(0.1))]


def test_lr_scales_with_the_number_of_ddp_processes(tmp_path: Path) -> None:
    """Two CPU ranks (gloo) of batch 4: global batch 8, so a recipe tuned for 16 runs at half its lr."""
    assert fit(16, batch_size=4, tmp_path=tmp_path, devices=2, strategy="ddp_fork") == [
        (2, pytest.approx(0.05)), (2, pytest.approx(0.05))]


def test_cli_run_scales_the_configs_lr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the entry point: the demo config's lr with a reference batch, on 1 device of batch 2."""
    from mobilenetv2_dense.commands.cli import cli_main

    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", "--config", str(CONFIGS / "deeplabv3lite_shapes_demo.yaml"),
                    "--data.num_train", "4", "--data.num_val", "2", "--data.image_size", "[48, 56]",
                    "--data.crop_size", "48", "--data.batch_size", "2", "--data.num_workers", "0",
                    "--model.init_args.optimization.reference_batch_size", "8", "--trainer.fast_dev_run", "1"])
    base = cli.model.optimization.lr
    assert cli.trainer.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(base * 2 / 8)


@pytest.mark.parametrize(("config", "reference", "batch"), [
    ("ssdlite_mobilenetv2_coco", 192, 24), ("ssdlite_mobilenetv2_voc", 64, 32),
    ("deeplabv3lite_mobilenetv2_voc", 16, 16), ("deeplabv3_mobilenetv2_voc", 16, 16),
    ("mobilenetv2_imagenet", 256, 256)])
def test_recipes_state_their_reference_batch(config: str, reference: int, batch: int) -> None:
    """The recipes' lr is for a stated global batch: the configs carry it, so 1 GPU gets lr x batch / reference."""
    text = (CONFIGS / f"{config}.yaml").read_text()
    values = yaml.safe_load(text)
    assert values["model"]["init_args"]["optimization"]["reference_batch_size"] == reference
    assert values["data"]["init_args"]["batch_size"] == batch
    assert f"reference_batch_size: {reference}" in text
