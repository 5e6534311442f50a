"""JointTask through the CLI: fit, then one validation logging the COCO and the segmentation metrics (each checked
against a computation by hand from the same checkpoint), predict with its writer; and the joint loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.nn import functional as F

from mobilenetv2_dense.__main__ import main as package_main
from mobilenetv2_dense.commands.cli import checkpoint_hyperparameters, cli_main
from mobilenetv2_dense.heads.loss import SSDLoss
from mobilenetv2_dense.heads.postprocess import PostProcessing
from mobilenetv2_dense.models import ssdlite_deeplabv3_mobilenet_v2
from mobilenetv2_dense.tasks.detection.evaluation import detections_to_array, evaluate_coco, scale_to_original
from mobilenetv2_dense.tasks.joint import JointTask
from mobilenetv2_dense.tasks.joint.loss import JointLoss
from tests.conftest import joint_options
from tests.tasks.test_fit_anchors import DEFAULT_SETTINGS, anchor_values

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_validation_logs_map_and_miou_of_the_same_checkpoint(joint_run, shapes_coco: Path, monkeypatch) -> None:
    folder, checkpoint = joint_run
    monkeypatch.chdir(folder)
    cli = cli_main(["validate", *joint_options(shapes_coco), "--ckpt_path", str(checkpoint)])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    for name in ("val/loss", "val/detection_loss", "val/segmentation_loss", "val/ce", "val/dice", "val/map",
                 "val/map_50", "val/mar_100", "val/miou", "val/pixel_accuracy"):
        assert name in metrics, name
    task, data = cli.model, cli.datamodule
    assert task.num_classes == 4 and task.num_seg_classes == 5 and task.seg_class_names[0] == "background"
    assert metrics["val/loss"] == pytest.approx(metrics["val/detection_loss"] + metrics["val/segmentation_loss"])

    # By hand from the same weights: the network on the same batches, boxes scaled to original pixels for COCOeval,
    # SSD's loss over the split, logits resized to each original mask, cross-entropy and a confusion matrix in numpy.
    model = ssdlite_deeplabv3_mobilenet_v2(num_classes=4, num_seg_classes=5, width_mult=0.35, weights=checkpoint,
                                           post_processing=PostProcessing(topk_candidates=30,
                                                                          detections_per_img=10)).eval()
    confusion = np.zeros((5, 5), dtype=np.int64)
    results, image_ids, ssd_losses, nll, pixels = [], [], [], 0.0, 0
    with torch.no_grad():
        for images, targets in data.val_dataloader():
            out = model(images)
            ssd_losses.append(SSDLoss().per_image(out, targets, model.box_coder))
            detections = scale_to_original(model.postprocess(out, (64, 64)), (64, 64),
                                           [t["orig_size"] for t in targets])
            ids = [int(t["image_id"]) for t in targets]
            results.append(detections_to_array(detections, ids, data.label_to_cat_id))
            image_ids += ids
            for logits, target in zip(out["out"], targets):
                mask = target["mask"]
                logits = F.interpolate(logits[None], size=mask.shape, mode="bilinear", align_corners=False)
                labelled = (mask != 255).numpy()
                nll += float(F.cross_entropy(logits, mask[None], ignore_index=255, reduction="sum"))
                pixels += int(labelled.sum())
                predicted, truth = logits.argmax(1)[0].numpy()[labelled], mask.numpy()[labelled]
                confusion += np.bincount(5 * truth + predicted, minlength=25).reshape(5, 5)
    sums = {name: torch.cat([terms[name] for terms in ssd_losses]).sum() for name in ssd_losses[0]}
    assert metrics["val/detection_loss"] == pytest.approx(float(sums["bbox_regression"] + sums["classification"])
                                                          / float(sums["positives"]), rel=1e-4)
    assert metrics["val/ce"] == pytest.approx(nll / pixels, rel=1e-4)
    assert metrics["val/segmentation_loss"] == pytest.approx(metrics["val/ce"] + 0.5 * metrics["val/dice"], rel=1e-5)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    iou = np.diag(confusion)[union > 0] / union[union > 0]
    assert metrics["val/miou"] == pytest.approx(iou.mean(), abs=1e-5)
    assert metrics["val/pixel_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-5)
    expected = evaluate_coco(data.val_coco, np.concatenate(results), image_ids=image_ids)
    assert metrics["val/map"] == pytest.approx(expected["map"], abs=1e-4)
    assert metrics["val/mar_100"] == pytest.approx(expected["mar_100"], abs=1e-4)

    # Both tasks' pictures, side by side in the run's validate/ folder (the detector's confusion matrix kept).
    pictures = Path(cli.trainer.log_dir) / "validate"
    for name in ("pr_curves.png", "confusion_matrix.png", "confusion_matrix.csv", "seg_iou_per_class.png",
                 "seg_confusion_matrix.png"):
        assert (pictures / name).stat().st_size > 0, name
    assert len((pictures / "confusion_matrix.csv").read_text().splitlines()) == 1 + 5  # header + K + background


def test_fit_logs_both_losses_and_predict_writes_boxes_and_masks(joint_run, shapes_coco: Path, monkeypatch) -> None:
    folder, checkpoint = joint_run
    # The fit's own log (validate runs in the same folder add version_1, ... with validation columns only).
    logged = (checkpoint.parent.parent / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("train/loss_epoch", "train/detection_loss_epoch", "train/segmentation_loss_epoch",
                 "train/bbox_regression_epoch", "train/ce_epoch", "train/dice_epoch"):
        assert name in logged, name

    monkeypatch.chdir(folder)
    images = shapes_coco / "val2017"
    predictions = cli_main(["predict", *joint_options(shapes_coco), "--ckpt_path", str(checkpoint),
                            "--data.init_args.predict_images", str(images), "--return_predictions", "true"])
    out = folder / "runs" / "ssdlite_deeplabv3lite_coco" / "predictions"
    files = sorted(images.glob("*.jpg"))
    per_image = [p for batch in predictions.trainer.predict_loop.predictions for p in batch]
    assert len(per_image) == len(files)
    for prediction, file in zip(per_image, files):
        size = Image.open(file).size[::-1]
        assert prediction["mask"].shape == size and prediction["mask"].dtype == torch.uint8  # original size
        written = np.asarray(Image.open(out / "masks" / f"{file.stem}.png"))
        np.testing.assert_array_equal(written, prediction["mask"].numpy())
        assert (out / f"{file.stem}.jpg").is_file()
    results = json.loads((out / "predictions.json").read_text())
    assert {r["category_id"] for r in results} <= {1, 3, 7, 9}  # the dataset's category ids


def test_joint_loss_weights_and_single_task_outputs() -> None:
    torch.manual_seed(0)
    model = ssdlite_deeplabv3_mobilenet_v2(num_classes=2, num_seg_classes=3, width_mult=0.35)
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1]),
                "mask": torch.randint(0, 3, (64, 64))} for _ in range(2)]
    targets[0]["mask"][:8] = 255  # void rows are ignored
    out = model(images)
    ssd = SSDLoss()
    both = JointLoss(ssd, detection_weight=2.0, segmentation_weight=0.5, dice_weight=0.3)(out, targets, model.box_coder)
    detection = ssd(out, targets, model.box_coder)["loss"]
    masks = torch.stack([t["mask"] for t in targets])
    ce = F.cross_entropy(out["out"], masks, ignore_index=255)
    assert torch.allclose(both["detection"], detection) and torch.allclose(both["ce"], ce)
    assert torch.allclose(both["segmentation"], ce + 0.3 * both["dice"])
    assert torch.allclose(both["loss"], 2.0 * detection + 0.5 * both["segmentation"])
    # A single-task network trains on its own part of the objective.
    only_masks = JointLoss(ssd)({"out": out["out"]}, targets)
    assert set(only_masks) == {"loss", "ce", "segmentation"} and torch.allclose(only_masks["loss"], ce)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        JointLoss(ssd, segmentation_weight=-1.0)


def test_joint_anchors_fitted_by_the_command_and_at_fit_start(shapes_coco: Path, tmp_path: Path, monkeypatch,
                                                              capsys) -> None:
    """The joint task takes the detector's anchor settings: the ``anchors`` command's YAML builds the joint model
    with them, and ``fit_anchors`` puts the values fitted at the start of fit into the checkpoint."""
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "fitted.yaml"
    package_main(["anchors", *joint_options(shapes_coco), "--generations", "100", "--output", str(output)])
    assert "best possible recall" in capsys.readouterr().out
    values = yaml.safe_load(output.read_text())["model"]["init_args"]["anchors"]
    cli = cli_main([*joint_options(shapes_coco), "--config", str(output)], run=False)
    assert isinstance(cli.model, JointTask) and anchor_values(cli.model.model.anchor_settings) == values

    cli = cli_main(["fit", *joint_options(shapes_coco), "--model.init_args.fit_anchors", "true",
                    "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"])
    fitted = anchor_values(cli.model.model.anchor_settings)
    assert fitted != anchor_values(DEFAULT_SETTINGS)  # the demo shapes are not COCO's boxes
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    assert anchor_values(checkpoint_hyperparameters(checkpoint)) == fitted
    cli = cli_main(["validate", *joint_options(shapes_coco), "--ckpt_path", str(checkpoint),
                    "--trainer.limit_val_batches", "1"])  # the checkpoint's anchors, not the config's defaults
    assert anchor_values(cli.model.model.anchor_settings) == fitted
