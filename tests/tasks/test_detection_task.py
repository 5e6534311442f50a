"""DetectionTask: loss + COCO mAP in one validation pass, original-pixel results, DDP de-duplication, predict,
configs through the CLI, and one learning test."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.heads.loss import SSDLossSettings
from mobilenetv2_dense.heads.postprocess import PostProcessing
from mobilenetv2_dense.pictures.detection import draw_detections
from mobilenetv2_dense.tasks.detection import DetectionPredictionWriter
from mobilenetv2_dense.tasks.detection.evaluation import evaluate_coco, scale_to_original
from mobilenetv2_dense.tasks.detection.evaluator import DetectionEvaluator
from mobilenetv2_dense.tasks.detection.module import DetectionTask

ROOT = Path(__file__).resolve().parents[2]
DETECTION_CONFIGS = [ROOT / "configs" / f"{name}.yaml"
                     for name in ("ssdlite_mobilenetv2_coco", "ssdlite_mobilenetv2_voc", "ssdlite_shapes_demo")]


# ------------------------------------------------------------------------------------------------ stand-ins
class TinyBoxes(L.LightningDataModule):
    """In-memory data under the detection contract: one box per image at 64x64 input, original images 2:1.

    Category ids have gaps (label 1 -> 5, label 2 -> 9); the val ground truth is in original pixels.
    """

    num_classes = 2
    class_names = ["a", "b"]
    label_to_cat_id = {1: 5, 2: 9}
    size = 64

    def __init__(self, num_images: int = 6, paths: list[str] | None = None) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.items, images, annotations = [], [], []
        for i in range(num_images):
            image_id = 100 + i
            label = 1 + i % 2
            box = torch.tensor([[8.0, 12.0, 40.0, 52.0]]) + 4 * (i % 3)  # input pixels
            image = torch.randn(3, self.size, self.size, generator=generator) * 0.1
            image[:, int(box[0, 1]):int(box[0, 3]), int(box[0, 0]):int(box[0, 2])] += 2.0 if label == 1 else -2.0
            orig = torch.tensor([2 * self.size, self.size])  # (h, w): y scales by 2, x by 1
            target = {"boxes": box, "labels": torch.tensor([label]), "image_id": image_id, "orig_size": orig}
            if paths:
                target["path"] = paths[i]
            self.items.append((image, target))
            x0, y0, x1, y1 = box[0].tolist()
            images.append({"id": image_id, "height": 2 * self.size, "width": self.size, "file_name": f"{i}.png"})
            annotations.append({"id": i + 1, "image_id": image_id, "category_id": self.label_to_cat_id[label],
                                "bbox": [x0, 2 * y0, x1 - x0, 2 * (y1 - y0)], "area": 2 * (x1 - x0) * (y1 - y0),
                                "iscrowd": 0})
        self.val_coco = COCO()
        self.val_coco.dataset = {"images": images, "annotations": annotations,
                                 "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]}
        self.val_coco.createIndex()

    def _loader(self, batch_size: int = 4) -> DataLoader:
        return DataLoader(self.items, batch_size=batch_size, collate_fn=lambda b: (torch.stack([x[0] for x in b]),
                                                                                   [x[1] for x in b]))

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()


def tiny_task(**kwargs) -> DetectionTask:
    """A width-0.35 detector; backbone fields (``init``, ``norm_eval``, ...) may be given among ``kwargs``."""
    fields = {key: kwargs.pop(key) for key in list(kwargs) if key in BackboneSettings.__dataclass_fields__}
    return DetectionTask(num_classes=2, backbone=BackboneSettings(**{"width_mult": 0.35, "init": "normal", **fields}),
                         **kwargs)


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


# ------------------------------------------------------------------------------------------------- unit tests
def test_num_classes_mismatch_names_both_values() -> None:
    with pytest.raises(ValueError, match=r"num_classes=3.*num_classes=2.*set model.init_args.num_classes to 2"):
        quiet_trainer(fast_dev_run=True).fit(
            DetectionTask(num_classes=3, backbone=BackboneSettings(width_mult=0.35, init="normal")), TinyBoxes())


def test_validation_logs_loss_and_coco_metrics_of_the_same_pass(capsys) -> None:
    """val/map equals COCOeval run by hand on the task's own detections mapped to original pixels."""
    # Seeded: an untrained head gives many equal scores, and the two COCO libraries order ties differently.
    torch.manual_seed(0)
    data, task = TinyBoxes(), tiny_task()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0)
    trainer.fit(task, data)
    metrics = trainer.callback_metrics
    for name in ("val/loss", "val/map", "val/map_50", "val/map_75", "val/map_small", "val/map_medium",
                 "val/map_large", "train/loss_epoch", "train/bbox_regression_epoch", "train/classification_epoch"):
        assert name in metrics, name

    # The reference: the network's raw outputs, decoded here, scaled by (orig_w / S, orig_h / S) by hand.
    from mobilenetv2_dense.heads.postprocess import postprocess_detections

    task.eval()
    results = []
    with torch.no_grad():
        for images, targets in data.val_dataloader():
            out = task.model(images)
            dets = postprocess_detections(out["bbox_regression"], out["cls_logits"], out["anchors"],
                                          task.model.box_coder, image_size=(64, 64))
            for det, target in zip(dets, targets):
                boxes = det["boxes"] * torch.tensor([1.0, 2.0, 1.0, 2.0])  # orig (128, 64) / input (64, 64)
                for (x0, y0, x1, y1), score, label in zip(boxes.tolist(), det["scores"].tolist(),
                                                          det["labels"].tolist()):
                    results.append({"image_id": target["image_id"], "category_id": data.label_to_cat_id[label],
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    expected = evaluate_coco(data.val_coco, results, backend="pycocotools", verbose=False)
    assert float(metrics["val/map"]) == pytest.approx(expected["map"], abs=2e-3)
    assert float(metrics["val/map_50"]) == pytest.approx(expected["map_50"], abs=2e-3)


def test_coco_summary_is_printed_by_validate_not_at_every_validation_of_fit(capsys) -> None:
    """COCOeval's 12-line table stays out of a training log (the numbers are logged as metrics) and is printed
    when validation is asked for on its own."""
    data, task = TinyBoxes(), tiny_task()
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=1, num_sanity_val_steps=1)
    trainer.fit(task, data)
    assert "Average Precision" not in capsys.readouterr().out
    assert "val/map" in trainer.callback_metrics and "val/mar_100" in trainer.callback_metrics
    quiet_trainer().validate(task, data, verbose=False)
    printed = capsys.readouterr().out
    assert printed.count("Average Precision") == 6 and printed.count("Average Recall") >= 6  # faster_coco_eval: 8


def test_repeated_images_count_once() -> None:
    """A DistributedSampler pads with repeats: an image met twice contributes its detections once."""
    data = TinyBoxes(num_images=4)
    task = tiny_task()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, num_sanity_val_steps=0)
    trainer.fit(task, data)
    images, targets = next(iter(data.val_dataloader()))
    with torch.no_grad():
        detections = scale_to_original(task.model.postprocess(task(images), (64, 64)), (64, 64),
                                       [t["orig_size"] for t in targets])
    evaluator = DetectionEvaluator()
    evaluator.update(detections, targets, None)
    once, ids_once = evaluator.gather()
    evaluator.update(detections, targets, None)  # the same images again, as sampler padding does
    twice, ids_twice = evaluator.gather()
    assert sorted(ids_once) == sorted(ids_twice) == [100, 101, 102, 103]
    np.testing.assert_array_equal(once, twice)


class FixedDetector(torch.nn.Module):
    """Stands in for SSDLite: in every image, one confident class-1 box at input pixels (8, 12, 40, 52) (its
    anchor, zero regression) and one background anchor."""

    def __init__(self) -> None:
        super().__init__()
        from mobilenetv2_dense.heads.box_coder import BoxCoder

        self.box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        n = images.shape[0]
        logits = torch.zeros(n, 2, 3)  # (N, A, K + 1)
        logits[:, 0, 1] = 10.0
        logits[:, 1, 0] = 10.0
        return {"bbox_regression": torch.zeros(n, 2, 4), "cls_logits": logits,
                "anchors": torch.tensor([[8.0, 12.0, 40.0, 52.0], [0.0, 0.0, 16.0, 16.0]])}

    def postprocess(self, outputs: dict[str, torch.Tensor], image_size: tuple[int, int]) -> list[dict]:
        """SSDLite's post-processing at its default settings."""
        from mobilenetv2_dense.heads.postprocess import postprocess_detections

        return postprocess_detections(outputs["bbox_regression"], outputs["cls_logits"], outputs["anchors"],
                                      self.box_coder, image_size=image_size)


def test_predict_writer_images_and_json(tmp_path: Path) -> None:
    """Originals are 64 wide and 128 high, the network sees 64x64: the box found at input pixels
    (8, 12, 40, 52) must come out at original pixels (8, 24, 40, 104) in the predictions, the JSON and the
    drawn picture."""
    from PIL import Image

    paths = []
    for i in range(3):
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((128, 64, 3), 40 * i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    data = TinyBoxes(num_images=3, paths=paths)
    writer = DetectionPredictionWriter(output_dir=str(tmp_path / "out"), score_thresh=0.5, image_format="png")
    task = tiny_task()
    task.model = FixedDetector()
    predictions = quiet_trainer(callbacks=[writer]).predict(task, data)
    per_image = [p for batch in predictions for p in batch]
    assert [p["path"] for p in per_image] == paths
    for p in per_image:
        torch.testing.assert_close(p["boxes"], torch.tensor([[8.0, 24.0, 40.0, 104.0]]))
        assert p["labels"].tolist() == [1]

    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == ["img0.png", "img1.png", "img2.png"]
    picture = np.asarray(Image.open(tmp_path / "out" / "img0.png"))
    assert picture.shape == (128, 64, 3)
    background = picture[0, 0]
    drawn_rows = np.flatnonzero((picture[:, 20] != background).any(axis=1))  # column 20 crosses the box
    assert drawn_rows.min() in (23, 24, 25) and drawn_rows.max() in (103, 104, 105), drawn_rows
    results = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(results) == 3
    for result in results:
        assert result["bbox"] == pytest.approx([8.0, 24.0, 32.0, 80.0])  # COCO [x, y, w, h], original pixels
        assert result["category_id"] == 5  # label 1 -> category id 5
    assert sorted(r["file_name"] for r in results) == ["img0.png", "img1.png", "img2.png"]
    data.val_coco.loadRes(results)  # pycocotools accepts it


def test_draw_detections_colours_only_confident_boxes() -> None:
    image = np.zeros((50, 60, 3), dtype=np.uint8)
    drawn = draw_detections(image, torch.tensor([[10.0, 10.0, 30.0, 40.0], [40.0, 5.0, 55.0, 20.0]]),
                            torch.tensor([1, 2]), torch.tensor([0.9, 0.1]), class_names=["a", "b"],
                            score_thresh=0.5)
    assert drawn.shape == (3, 50, 60) and drawn.dtype == torch.uint8
    assert drawn[:, 10, 10:30].sum() > 0  # top edge of the kept box
    assert drawn[:, 5:20, 40:55].sum() == 0  # the low-score box is not drawn


# --------------------------------------------------------------------------------------------- through the CLI
TINY = ["--data.num_train", "8", "--data.num_val", "4", "--data.scene_size", "96", "--data.image_size", "96",
        "--data.batch_size", "2", "--data.num_workers", "0", "--model.backbone.width_mult", "0.35"]


@pytest.mark.parametrize("config", DETECTION_CONFIGS, ids=[c.stem for c in DETECTION_CONFIGS])
def test_config_instantiates_without_data(config: Path, tmp_path: Path, monkeypatch) -> None:
    """COCO and VOC are not on this machine: building the config must not touch the data paths."""
    from mobilenetv2_dense.commands.cli import cli_main

    monkeypatch.chdir(tmp_path)
    # no dataset here: the class count is given, not read from the data
    cli = cli_main(["--config", str(config), "--model.init_args.num_classes", "3"], run=False)
    assert isinstance(cli.model, DetectionTask)
    assert cli.model.model.num_classes == cli.model.hparams.num_classes
    assert any(isinstance(c, DetectionPredictionWriter) for c in cli.trainer.callbacks)
    assert cli.trainer.checkpoint_callback.monitor in ("val/map", "val/map_50")
    assert not (tmp_path / "data").exists()


def test_fit_fast_dev_run_and_predict_through_cli(tmp_path: Path, monkeypatch) -> None:
    from mobilenetv2_dense.commands.cli import cli_main

    monkeypatch.chdir(tmp_path)
    config = str(ROOT / "configs" / "ssdlite_shapes_demo.yaml")
    fit = cli_main(["fit", "--config", config, *TINY, "--trainer.fast_dev_run", "true"])
    metrics = fit.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "val/map" in metrics and "val/loss" in metrics

    val_images = tmp_path / "data" / "shapes_coco" / "val2017"
    predict = cli_main(["predict", "--config", config, *TINY, "--data.predict_images", str(val_images)])
    out = tmp_path / "runs" / "shapes_detection" / "predictions"
    assert len(list(out.glob("*.jpg"))) == 4
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 3, 7, 9}  # the shapes' gapped ids
    # The val images keep their COCO ids, so the file evaluates against the val annotations as it is.
    coco = predict.datamodule.val_coco
    assert {r["image_id"] for r in results} <= set(coco.getImgIds())
    assert all(coco.imgs[r["image_id"]]["file_name"] == r["file_name"] for r in results)
    coco.loadRes(results)


# ------------------------------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_overfits_small_shapes_set(tmp_path: Path) -> None:
    """64 generated images at 128 px, evaluated on themselves: SSDLite must reach AP50 >= 0.9."""
    from mobilenetv2_dense.datasets.detection import DetectionAugment, write_shapes_coco
    from mobilenetv2_dense.tasks.detection import COCODataModule
    from mobilenetv2_dense.tasks.optim import Optimization

    root = write_shapes_coco(tmp_path / "shapes", num_train=64, num_val=0, image_size=128, seed=1, max_objects=3)
    train = {"images": str(root / "train2017"), "annotations": str(root / "annotations" / "instances_train2017.json")}
    data = COCODataModule(train_images=train["images"], train_annotations=train["annotations"],
                          val_images=train["images"], val_annotations=train["annotations"], image_size=128,
                          batch_size=8, num_workers=0, pin_memory=False,
                          augment=DetectionAugment(photometric=False, max_zoom=1.0, min_iou_crop=False, hflip=False))
    task = DetectionTask(num_classes=4, backbone=BackboneSettings(width_mult=0.5, init="normal"),
                         optimization=Optimization(optimizer="adamw", lr=3e-3, weight_decay=0.0,
                                                   schedule="cosine", warmup_epochs=2),
                         channels_last=True)  # NHWC: the same run, faster on a CPU
    trainer = quiet_trainer(max_epochs=60, check_val_every_n_epoch=60, num_sanity_val_steps=0)
    trainer.fit(task, data)
    assert float(trainer.callback_metrics["val/map_50"]) >= 0.9, dict(trainer.callback_metrics)


def test_ddp_evaluates_the_whole_val_set_once() -> None:
    """Two CPU ranks (gloo), 5 val images: the DistributedSampler pads rank 1 with a repeat of image 0. The
    gathered, de-duplicated evaluation must equal the single-process one."""
    data = TinyBoxes(num_images=5)
    task = tiny_task(post_processing=PostProcessing(score_thresh=0.0))
    quiet_trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0).fit(task, data)
    single = quiet_trainer()
    single.validate(task, data, verbose=False)
    ddp = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    ddp.validate(task, data, verbose=False)
    for name in ("val/map", "val/map_50", "val/mar_100"):
        assert float(ddp.callback_metrics[name]) == pytest.approx(float(single.callback_metrics[name]), abs=1e-6)
    assert float(single.callback_metrics["val/mar_100"]) > 0  # a case with something to find


class RecordWeights(L.Callback):
    """The task's floating-point state (weights and BN statistics) after every optimizer step."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()
                            if v.is_floating_point()})


def test_ema_of_weights_is_what_training_leaves_and_checkpoints_load(tmp_path: Path) -> None:
    """Lightning's EMAWeightAveraging (the configs' EMA switch), checked against the decay formula applied by hand
    to the weights recorded after each of 3 optimizer steps: e_1 = w_1, e_t = d e_(t-1) + (1 - d) w_t. Validation
    scores the averaged weights, fit leaves them in the task, and the checkpoint holds them and loads back."""
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

    decay, data = 0.5, TinyBoxes(num_images=12)  # 3 batches of 4
    record, checkpoint = RecordWeights(), ModelCheckpoint(dirpath=tmp_path, save_last=True)
    L.seed_everything(0)
    task = tiny_task()
    L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              max_epochs=1, limit_train_batches=3, num_sanity_val_steps=0,
              callbacks=[record, EMAWeightAveraging(decay=decay), checkpoint]).fit(task, data)
    assert len(record.states) == 3
    expected = dict(record.states[0])
    for state in record.states[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * state[k] for k in expected}

    averaged = task.state_dict()
    for k, value in expected.items():
        torch.testing.assert_close(averaged[k], value, rtol=1e-5, atol=1e-7, msg=k)
    conv = "model.head.cls_predictors.0.1.weight"
    assert not torch.allclose(expected[conv], record.states[-1][conv])  # the average is not the last weights

    def val_loss(state: dict[str, torch.Tensor]) -> float:
        """The epoch's val/loss (SSD's loss with the whole split as one batch) of a task holding ``state``."""
        reference = tiny_task()
        reference.load_state_dict({**reference.state_dict(), **state})
        reference.eval()
        with torch.no_grad():
            batches = list(data.val_dataloader())
            images = torch.cat([images for images, _ in batches])
            targets = [target for _, targets in batches for target in targets]
            return float(reference.criterion(reference(images), targets, reference.model.box_coder)["loss"])

    logged = float(task.trainer.callback_metrics["val/loss"])
    assert logged == pytest.approx(val_loss(expected), rel=1e-4)
    assert logged != pytest.approx(val_loss(record.states[-1]), rel=1e-4)  # not the raw weights'

    reloaded = DetectionTask.load_from_checkpoint(checkpoint.last_model_path).state_dict()
    assert all(torch.equal(reloaded[k], averaged[k]) for k in averaged)


# ------------------------------------------------------------------------------------ frozen BatchNorm in fit
def _bn_statistics(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in module.named_buffers()
            if name.endswith(("running_mean", "running_var"))}


# norm_eval freezes unit statistics on these random weights, so nothing normalises the backbone: He's init keeps the
# activations at scale, as pretrained weights would (N(0, 0.03) shrinks them until SGD's steps on the BN scales round
# away in float32).
@pytest.mark.parametrize("kwargs", [dict(norm_eval=True, init="kaiming"), dict(frozen_stages=2)],
                         ids=["norm_eval", "frozen_stages"])
def test_frozen_batchnorm_statistics_hold_through_trainer_fit(kwargs: dict) -> None:
    """Lightning keeps each module's mode at fit start (it never calls ``train()``): the frozen statistics must
    hold anyway, while the rest of the network (BN statistics outside the frozen part, weights) still trains."""
    task = tiny_task(**kwargs)
    backbone = task.model.backbone
    frozen = [backbone] if "norm_eval" in kwargs else [backbone.stem, *backbone.stages[:2]]
    trained = [task.model.head] if "norm_eval" in kwargs else [*backbone.stages[2:], task.model.head]
    frozen_before = [_bn_statistics(m) for m in frozen]
    trained_before = [_bn_statistics(m) for m in trained]
    weights_before = {k: v.clone() for k, v in task.named_parameters()}
    quiet_trainer(max_steps=2, limit_val_batches=0).fit(task, TinyBoxes())

    for module, before in zip(frozen, frozen_before):
        assert before and all(torch.equal(v, _bn_statistics(module)[k]) for k, v in before.items())
    for module, before in zip(trained, trained_before):
        changed = [k for k, v in before.items() if not torch.equal(v, _bn_statistics(module)[k])]
        assert len(changed) == len(before), "BN statistics outside the frozen part must keep training"
    params = dict(task.named_parameters())
    moved = {k for k, v in weights_before.items() if not torch.equal(v, params[k])}
    backbone_params = {f"model.backbone.{k}": p.requires_grad for k, p in backbone.named_parameters()}
    frozen_params = {k for k, trainable in backbone_params.items() if not trainable}
    assert moved & set(backbone_params) == set(backbone_params) - frozen_params  # BN affine included
    if "frozen_stages" in kwargs:
        assert frozen_params and all(k.startswith(("model.backbone.stem", "model.backbone.stages.0",
                                                   "model.backbone.stages.1")) for k in frozen_params)


# ---------------------------------------------------------------------------------------------- loss set-up
class FirstLoss(L.Callback):
    """The logged classification loss of the first training step, before any update."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.classification = float(trainer.callback_metrics["train/classification_step"])


def test_focal_loss_starts_from_the_retinanet_prior() -> None:
    """Object logits start at sigmoid^-1(0.01): each positive costs 0.25 * 0.99^2 * -log(0.01) = 1.13 and the
    negatives next to nothing, so the first focal loss (per positive) is ~1.13; at p = 0.5 it would be the
    A * K easy negatives over the positives (~1,800 at 320 px on COCO)."""
    L.seed_everything(0)
    first = FirstLoss()
    task = tiny_task(loss=SSDLossSettings(classification="focal"))
    quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[first]).fit(task, TinyBoxes())
    assert first.classification == pytest.approx(0.25 * 0.99 ** 2 * -np.log(0.01), rel=0.15)
    bias = task.model.head.cls_predictors[0][-1].bias.view(task.model.head.num_anchors[0], 3)  # (A_l, K + 1)
    assert torch.sigmoid(bias[:, 1:]).allclose(torch.tensor(0.01), atol=1e-3)  # the step moved it a little


def test_default_loss_learns_background_from_an_image_without_boxes() -> None:
    """DetectionTask's softmax loss keeps TF's 3 hard negatives in a box-less image (COCO has ~1k of them)."""
    task = tiny_task().eval()
    images, targets = next(iter(TinyBoxes(num_images=2)._loader(batch_size=2)))
    empty = {**targets[1], "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    with torch.no_grad():
        outputs = task(images)
        both = task.criterion(outputs, [targets[0], empty], task.model.box_coder)["classification"]
        first = {k: v[:1] if k != "anchors" else v for k, v in outputs.items()}
        alone = task.criterion(first, targets[:1], task.model.box_coder)["classification"]
    assert both - alone > 0  # 3 x 0 negatives would add exactly 0
    assert task.criterion.settings.min_negatives_per_image == 3


# ------------------------------------------------------------------------------------------ topk_candidates
def test_topk_benchmark_scores_each_value_and_defaults_agree(shapes_coco: Path, tmp_path: Path, capsys) -> None:
    """benchmarks/detection_topk.py runs on a checkpoint and COCO-layout data; the default it chose (300) is
    the signature's and every detection config's."""
    import inspect

    import yaml

    from benchmarks.detection_topk import main

    task = DetectionTask(num_classes=4, backbone=BackboneSettings(width_mult=0.35, init="normal"))
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}, tmp_path / "t.ckpt")
    main(["--ckpt", str(tmp_path / "t.ckpt"), "--root", str(shapes_coco), "--image-size", "96",
          "--topk", "10,300", "--repeats", "1", "--threads", "1"])
    table = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in table if line.split() and line.split()[0] in ("10", "300")]
    assert [r[0] for r in rows] == ["10", "300"] and float(rows[0][5]) <= 10  # dets/img capped by the top-k

    default = inspect.signature(DetectionTask).parameters["post_processing"].default.topk_candidates
    assert default == 300
    for config in DETECTION_CONFIGS:
        block = yaml.safe_load(config.read_text())["model"]["init_args"]["post_processing"]
        assert block["topk_candidates"] == default, config.name
