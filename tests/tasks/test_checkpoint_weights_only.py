"""Checkpoints of tasks and data modules built in Python (dataclasses in their hyper-parameters) load under
torch's ``weights_only=True`` default, by ``load_from_checkpoint`` and by ``Trainer.fit(ckpt_path=...)``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.datasets.detection import DetectionAugment
from mobilenetv2_dense.tasks.detection import COCODataModule, DetectionTask
from mobilenetv2_dense.tasks.optim import Optimization
from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask

pytestmark = pytest.mark.usefixtures("one_thread")


def trainer(max_steps: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0)


class RecordedCOCO(COCODataModule):
    """A data module that records its arguments in checkpoints, ``augment`` (a dataclass) among them."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()


def test_segmentation_task_with_optimization(tmp_path: Path) -> None:
    optimization = Optimization(optimizer="adamw", lr=1e-3, schedule="poly")
    loader = DataLoader(TensorDataset(torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))), batch_size=2)
    first = trainer(max_steps=1)
    first.fit(SegmentationTask(num_classes=3, backbone=BackboneSettings(width_mult=0.35), optimization=optimization),
              loader)
    path = tmp_path / "seg.ckpt"
    first.save_checkpoint(path)

    task = SegmentationTask.load_from_checkpoint(path)
    assert task.optimization == optimization
    resumed = trainer(max_steps=2)
    resumed.fit(SegmentationTask(num_classes=3, backbone=BackboneSettings(width_mult=0.35),
                                 optimization=optimization), loader, ckpt_path=path)
    assert resumed.global_step == 2


def test_detection_data_module_with_augment(shapes_coco: Path, tmp_path: Path) -> None:
    augment = DetectionAugment(photometric=False, max_zoom=1.0)

    def data() -> RecordedCOCO:
        return RecordedCOCO(root=str(shapes_coco), image_size=64, batch_size=4, num_workers=0, pin_memory=False,
                            augment=augment)

    def task() -> DetectionTask:
        return DetectionTask(num_classes=4, backbone=BackboneSettings(width_mult=0.35, init="normal"),
                             optimization=Optimization(lr=1e-3))

    first = trainer(max_steps=1)
    first.fit(task(), data())
    path = tmp_path / "det.ckpt"
    first.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["datamodule_hyper_parameters"]["augment"] == augment

    assert DetectionTask.load_from_checkpoint(path).optimization.lr == 1e-3
    resumed = trainer(max_steps=2)
    resumed.fit(task(), data(), ckpt_path=path)
    assert resumed.global_step == 2
