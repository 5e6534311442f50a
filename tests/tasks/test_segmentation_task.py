"""SegmentationTask: test-time augmentation, output-stride switching, checks, configs, predict output, learning."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.datasets.segmentation.voc import voc_palette
from mobilenetv2_dense.pictures.segmentation import overlay_mask, save_index_png
from mobilenetv2_dense.tasks.segmentation import SegmentationEvaluation
from mobilenetv2_dense.tasks.segmentation.loss import SegmentationLossSettings
from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_task(**kwargs) -> SegmentationTask:
    if "dice_weight" in kwargs:
        kwargs["loss"] = SegmentationLossSettings(dice_weight=kwargs.pop("dice_weight"))
    return SegmentationTask(**{"num_classes": 3, "backbone": BackboneSettings(width_mult=0.35), **kwargs})


class RandomSegmentationData(L.LightningDataModule):
    """A stand-in data module: random images and masks as ``(images, masks)`` batches."""

    def __init__(self, num_classes: int = 3, size: int = 48, count: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = [f"c{k}" for k in range(num_classes)]
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(count, 3, size, size, generator=generator)
        masks = torch.randint(0, num_classes, (count, size, size), generator=generator)
        masks[:, :4] = 255
        self.dataset = TensorDataset(images, masks)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=2)


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


# ------------------------------------------------------------------------------------- test-time augmentation


class SizeLogits(nn.Module):
    """Stand-in network whose class-1 logit is H / 64 everywhere: a scale-dependent, flip-invariant output."""

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        n, _, h, w = images.shape
        return {"out": torch.stack([torch.zeros(n, h, w), torch.full((n, h, w), h / 64)], dim=1)}


class ColumnLogits(nn.Module):
    """Stand-in network whose class-1 logit grows with the column: flipping the input does not flip it."""

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        n, _, h, w = images.shape
        ramp = torch.linspace(-2, 2, w).expand(n, h, w)
        return {"out": torch.stack([torch.zeros(n, h, w), ramp], dim=1)}


def test_single_scale_no_flip_is_the_plain_forward():
    task = tiny_task().eval()
    images = torch.randn(2, 3, 37, 45)
    with torch.no_grad():
        expected = task.model(images)["out"].log_softmax(1)
        got = task.log_probabilities(images)
    assert got.shape == (2, 3, 37, 45)
    torch.testing.assert_close(got, expected)


def test_multi_scale_averages_probabilities_at_input_size():
    task = tiny_task(evaluation=SegmentationEvaluation(scales=(0.5, 1.0, 1.5))).eval()
    task.model = SizeLogits()
    probs = task.log_probabilities(torch.zeros(1, 3, 64, 40)).exp()
    assert probs.shape == (1, 2, 64, 40)
    # Probabilities (not logits) are averaged: class-1 logits are 0.5, 1.0 and 1.5 at the three scales.
    expected = sum(torch.sigmoid(torch.tensor(s)) for s in (0.5, 1.0, 1.5)) / 3
    torch.testing.assert_close(probs[:, 1], expected.expand(1, 64, 40))


def test_flip_tta_flips_predictions_back():
    task = tiny_task(evaluation=SegmentationEvaluation(flip=True)).eval()
    task.model = ColumnLogits()
    probs = task.log_probabilities(torch.zeros(1, 3, 8, 16)).exp()
    # The prediction on the flipped input is flipped back before averaging, so column j meets column W-1-j:
    # the average of a ramp and its mirror is flat at the mean probability of a mirrored pair.
    ramp = torch.sigmoid(torch.linspace(-2, 2, 16))
    torch.testing.assert_close(probs[0, 1], ((ramp + ramp.flip(0)) / 2).expand(8, 16))
    # A flip-equivariant network (per-pixel 1x1 conv) gets exactly its plain prediction back.
    task = tiny_task(evaluation=SegmentationEvaluation(flip=True, scales=(1.0,))).eval()
    task.model = PointwiseNet()
    images = torch.randn(2, 3, 10, 14)
    with torch.no_grad():
        torch.testing.assert_close(task.log_probabilities(images), task.model(images)["out"].log_softmax(1))


class PointwiseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"out": self.conv(images)}


def test_eval_arguments_are_checked():
    with pytest.raises(ValueError, match="scales must be positive"):
        tiny_task(evaluation=SegmentationEvaluation(scales=()))
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or null"):
        tiny_task(evaluation=SegmentationEvaluation(output_stride=4))


# ------------------------------------------------------------------------------------- output stride, checks


class StrideRecorder(L.Callback):
    def __init__(self) -> None:
        self.train, self.val = set(), set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.add((pl_module.model.output_stride, pl_module.model.head.atrous_rates))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val.add((pl_module.model.output_stride, pl_module.model.head.atrous_rates))


def test_eval_output_stride_switches_for_validation_and_restores_for_training():
    task = tiny_task(head="aspp", output_stride=16, evaluation=SegmentationEvaluation(output_stride=8))
    recorder = StrideRecorder()
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, callbacks=[recorder],
                            num_sanity_val_steps=1)
    trainer.fit(task, datamodule=RandomSegmentationData())
    assert recorder.train == {(16, (6, 12, 18))}
    assert recorder.val == {(8, (12, 24, 36))}
    assert task.model.output_stride == 16 and task.model.head.atrous_rates == (6, 12, 18)
    dilations = {m.dilation for m in task.model.backbone.modules() if isinstance(m, nn.Conv2d)}
    assert dilations == {(1, 1), (2, 2)}  # OS16: only the last stages dilate, by 2


def test_validation_logs_miou_equal_to_the_metric_on_the_predictions(caplog):
    data = RandomSegmentationData()
    task = tiny_task()
    metrics = quiet_trainer().validate(task, datamodule=data, verbose=False)[0]
    task.eval()
    with torch.no_grad():
        images, masks = data.dataset.tensors
        preds = task.model(images)["out"].argmax(1)
    from mobilenetv2_dense.tasks.segmentation.metrics import confusion_matrix, scores_from_confusion

    expected = scores_from_confusion(confusion_matrix(preds, masks, 3))
    assert metrics["val/miou"] == pytest.approx(expected["miou"].item(), abs=1e-5)
    assert metrics["val/pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"].item(), abs=1e-5)
    printed = caplog.text  # rank_zero_info: Lightning's console logger
    assert "per-class IoU" in printed and "c2" in printed  # the table uses the data module's class names


def test_validate_then_fit_reuses_the_metric_state():
    # validate() resets the metric under inference mode; the validation inside fit() must still update it.
    task, data = tiny_task(), RandomSegmentationData()
    quiet_trainer().validate(task, datamodule=data, verbose=False)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=data)
    assert "val/miou" in trainer.callback_metrics


def test_num_classes_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model.num_classes is 3 .* num_classes=5"):
        quiet_trainer().validate(tiny_task(), datamodule=RandomSegmentationData(num_classes=5))


def test_dice_weight_adds_smp_dice_loss():
    images, masks = RandomSegmentationData().dataset.tensors
    plain, dice = tiny_task(), tiny_task(dice_weight=0.5)
    dice.model.load_state_dict(plain.model.state_dict())
    plain.train(), dice.train()
    torch.manual_seed(0)
    loss_plain = plain.training_step((images, masks), 0)
    torch.manual_seed(0)
    loss_dice = dice.training_step((images, masks), 0)
    from segmentation_models_pytorch.losses import DiceLoss

    torch.manual_seed(0)
    logits = dice.model(images)["out"]
    expected = DiceLoss(mode="multiclass", ignore_index=255)(logits, masks)
    torch.testing.assert_close(loss_dice - loss_plain, 0.5 * expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------- drawing


def test_overlay_blends_object_colours_only():
    image = np.full((2, 3, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1, 15], [255, 2, 0]])
    out = overlay_mask(image, mask, alpha=0.5)
    palette = voc_palette()
    assert (out[0, 0] == 100).all() and (out[1, 0] == 100).all() and (out[1, 2] == 100).all()  # bg and void
    assert out[0, 1].tolist() == [114, 50, 50]  # (100 + 128) / 2, (100 + 0) / 2, ...
    assert out[0, 2].tolist() == [round((100 + int(c)) / 2) for c in palette[15]]
    with pytest.raises(ValueError, match="original size"):
        overlay_mask(image, mask[:, :2])


def test_index_png_round_trips_with_voc_palette(tmp_path):
    mask = np.array([[0, 1, 20], [255, 7, 0]], dtype=np.uint8)
    path = save_index_png(mask, tmp_path / "a" / "mask.png")
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), mask)
        palette = np.array(image.getpalette()).reshape(-1, 3)
    assert palette[1].tolist() == [128, 0, 0] and palette[255].tolist() == [224, 224, 192]
    assert palette[15].tolist() == [192, 128, 128]  # VOC "person"



# ------------------------------------------------------------------------------------- configs and the CLI


@pytest.mark.parametrize("name, head, weights", [
    ("deeplabv3lite_mobilenetv2_voc.yaml", "lite", "IMAGENET1K_V1"),
    ("deeplabv3_mobilenetv2_voc.yaml", "aspp", "IMAGENET1K_V1"),
    ("deeplabv3lite_shapes_demo.yaml", "lite", None),
])
def test_configs_instantiate_without_data_or_downloads(name, head, weights, monkeypatch, tmp_path):
    import mobilenetv2_dense.backbone.weights
    from mobilenetv2_dense.commands.cli import cli_main

    requested = []  # the ImageNet weights are an optional download: record the request instead of fetching
    monkeypatch.setattr(mobilenetv2_dense.backbone.weights, "load_weights", lambda model, w: requested.append(w))
    monkeypatch.chdir(tmp_path)  # no dataset here: instantiation must not touch the data folders
    cli = cli_main(["--config", str(CONFIGS / name)], run=False)
    task, data = cli.model, cli.datamodule
    assert isinstance(task, SegmentationTask) and task.hparams.head == head
    assert task.num_classes == data.num_classes == len(data.class_names)
    assert requested == ([weights] if weights else [])
    assert task.optimization.schedule == "poly" and task.optimization.poly_power == 0.9
    assert any(type(c).__name__ == "SegmentationPredictionWriter" for c in cli.trainer.callbacks)
    if "voc" in name:  # the paper's recipe (TF DeepLab: trainaug, OS16, crop 513, batch 16, SGD 0.007, wd 4e-5)
        assert (task.num_classes, task.output_stride, data.crop_size, data.batch_size) == (21, 16, 512, 16)
        assert (task.optimization.optimizer, task.optimization.lr, task.optimization.weight_decay) == ("sgd", 0.007,
                                                                                                         4e-5)
        assert data.train_split == "trainaug"
    assert not any(tmp_path.iterdir())


SHRINK = ["--data.num_train", "6", "--data.num_val", "3", "--data.image_size", "[64, 88]", "--data.crop_size", "64",
          "--data.batch_size", "2", "--data.val_batch_size", "2", "--data.num_workers", "0"]


def test_demo_config_fast_dev_run_fit(monkeypatch, tmp_path):
    from mobilenetv2_dense.commands.cli import cli_main

    monkeypatch.chdir(tmp_path)  # the config's relative data/ and runs/ folders land in tmp_path
    cli = cli_main(["fit", "--config", str(CONFIGS / "deeplabv3lite_shapes_demo.yaml"), *SHRINK,
                    "--trainer.fast_dev_run", "1"])
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/miou", "val/pixel_accuracy"} <= set(metrics)
    assert 0 <= float(metrics["val/miou"]) <= 1
    assert (tmp_path / "data" / "shapes_voc" / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir()


def test_predict_writes_palette_pngs_at_original_size_and_overlays(tmp_path):
    from mobilenetv2_dense.tasks.segmentation import SegmentationPredictionWriter
    from mobilenetv2_dense.tasks.segmentation.datamodule import ShapesVOCDataModule

    data = ShapesVOCDataModule(root=str(tmp_path / "shapes"), num_train=2, num_val=3, image_size=(40, 72),
                               num_workers=0, val_batch_size=3,
                               predict_images=str(tmp_path / "shapes" / "VOCdevkit" / "VOC2012" / "JPEGImages"))
    data.prepare_data()
    writer = SegmentationPredictionWriter(str(tmp_path / "out"))
    masks = quiet_trainer(callbacks=[writer]).predict(tiny_task(num_classes=5), datamodule=data)
    images = sorted((tmp_path / "shapes").rglob("*.jpg"))
    sizes = {p.stem: Image.open(p).size for p in images}
    assert len({s for s in sizes.values()}) > 1  # varied sizes: the batch was padded, the outputs cropped
    assert sum(len(batch) for batch in masks) == len(images) == 5
    for stem, size in sizes.items():
        with Image.open(tmp_path / "out" / "masks" / f"{stem}.png") as png:
            assert png.mode == "P" and png.size == size
            assert np.asarray(png).max() < 5
        with Image.open(tmp_path / "out" / "overlays" / f"{stem}.jpg") as overlay:
            assert overlay.size == size


# ------------------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_overfits_a_small_generated_set(tmp_path):
    """16 generated 96x96 scenes, read back through the VOC loader: training must reach mIoU >= 0.8 on them."""
    from mobilenetv2_dense.datasets.segmentation.dataset import SegmentationDataset, segmentation_collate
    from mobilenetv2_dense.datasets.segmentation.shapes import write_shapes_voc
    from mobilenetv2_dense.datasets.segmentation.transforms import eval_transforms
    from mobilenetv2_dense.datasets.segmentation.voc import voc_samples
    from mobilenetv2_dense.tasks.optim import Optimization

    L.seed_everything(0)
    voc = write_shapes_voc(tmp_path, num_train=16, num_val=0, image_size=96, seed=1)
    dataset = SegmentationDataset(voc_samples(voc, "train"), eval_transforms(), num_classes=5, name="overfit")
    train = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=segmentation_collate)
    val = DataLoader(dataset, batch_size=8, collate_fn=segmentation_collate)
    task = SegmentationTask(num_classes=5, backbone=BackboneSettings(width_mult=0.5),
                            loss=SegmentationLossSettings(dice_weight=0.5),
                            optimization=Optimization(optimizer="sgd", lr=0.05, weight_decay=0.0, schedule="poly"))
    before = quiet_trainer().validate(task, val, verbose=False)[0]["val/miou"]
    trainer = quiet_trainer(max_epochs=60, check_val_every_n_epoch=60, num_sanity_val_steps=0)
    trainer.fit(task, train, val)
    after = float(trainer.callback_metrics["val/miou"])
    assert before < 0.5 and after >= 0.8, (before, after)
