"""Segmentation scores and predictions do not depend on how the images are batched: not on which images share
a padded batch (each image runs at its own size), and not on how many DDP ranks share the split (the
DistributedSampler's padding repeats are counted once)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.tasks.segmentation.datamodule import ShapesVOCDataModule
from mobilenetv2_dense.tasks.segmentation.loss import SegmentationLossSettings
from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask

NUM_VAL = 5  # odd: two ranks get 3 + 3 samples, one of them a repeat
SCORES = ("val/miou", "val/pixel_accuracy", "val/loss", "val/ce", "val/dice")


def quiet_trainer(**kwargs) -> L.Trainer:
    kwargs = {"accelerator": "cpu", "devices": 1, **kwargs}
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kwargs)


def shapes(root: Path, **kwargs) -> ShapesVOCDataModule:
    """Generated VOC-layout scenes of 40..72 px, so no two val images need share a size."""
    kwargs = {"num_train": 6, "num_val": NUM_VAL, "image_size": (40, 72), "crop_size": 48, "batch_size": 3,
              "num_workers": 0, **kwargs}
    return ShapesVOCDataModule(str(root), **kwargs)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes_voc")
    shapes(root).prepare_data()
    return root


class ImagePoolingLogits(nn.Module):
    """Stand-in network with DeepLab's two padding-sensitive parts, small enough to give varied predictions
    untrained: a 3x3 convolution (zero padding at the border) plus a 1x1 convolution of the image mean (the
    image-pooling branch)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.pixel = nn.Conv2d(3, num_classes, 3, padding=1)
        self.pooled = nn.Conv2d(3, num_classes, 1)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"out": self.pixel(images) + self.pooled(images.mean((2, 3), keepdim=True))}


def make_task(network: str = "stand-in") -> SegmentationTask:
    """The task around the stand-in, or around the real (untrained) DeepLabv3-lite, whose scores are constant
    untrained but whose loss shows any padding that leaks. The loss has its Dice term, from split-level sums."""
    torch.manual_seed(0)
    task = SegmentationTask(num_classes=5, backbone=BackboneSettings(width_mult=0.35),
                            loss=SegmentationLossSettings(dice_weight=0.5))
    if network == "stand-in":
        task.model = ImagePoolingLogits(5)
    return task


def validate(task: SegmentationTask, data: L.LightningDataModule, **trainer_kwargs) -> dict[str, float]:
    trainer = quiet_trainer(**trainer_kwargs)
    trainer.validate(task, datamodule=data, verbose=False)
    return {name: float(trainer.callback_metrics[name]) for name in SCORES}


@pytest.mark.parametrize("network", ["stand-in", "deeplab"])
def test_val_scores_do_not_depend_on_val_batch_size(network: str, root: Path) -> None:
    task = make_task(network)
    one = validate(task, shapes(root, val_batch_size=1))
    dm = shapes(root, val_batch_size=NUM_VAL)
    dm.setup("validate")
    _, _, sizes = next(iter(dm.val_dataloader()))
    assert len(set(sizes)) > 1  # the batch of all five is padded
    together = validate(task, dm)
    assert together == pytest.approx(one, abs=1e-6)


def test_predictions_equal_batch_one_inference(root: Path) -> None:
    task = make_task()
    images = root / "VOCdevkit" / "VOC2012" / "JPEGImages"
    dm = shapes(root, val_batch_size=4, predict_images=str(images))
    batches = quiet_trainer().predict(task, datamodule=dm)
    masks = [mask for batch in batches for mask in batch]
    assert len(masks) == len(dm.predict_dataset) == 6 + NUM_VAL
    assert all(len(mask.unique()) > 1 for mask in masks)
    task.eval()
    with torch.no_grad():
        for i, mask in enumerate(masks):
            image, path = dm.predict_dataset[i]
            alone = task.log_probabilities(image[None]).argmax(1)[0].to(torch.uint8)
            assert mask.shape == image.shape[-2:], path
            assert torch.equal(mask, alone), path


@pytest.mark.parametrize("val_batch_size", [1, 3])
def test_ddp_counts_each_val_image_once(root: Path, val_batch_size: int) -> None:
    """Two CPU ranks (gloo) on 5 val images: the DistributedSampler gives rank 1 a repeat of image 0 (alone in
    its last batch at batch size 1, beside two other images at 3), which must count neither in the confusion
    matrix nor in the loss."""
    task = make_task()
    single = validate(task, shapes(root, val_batch_size=val_batch_size))
    ddp = validate(task, shapes(root, val_batch_size=val_batch_size), devices=2, strategy="ddp_fork")
    assert ddp == pytest.approx(single, abs=1e-6)
