"""Checkpoints written before the settings blocks (flat ``width_mult``, ``iou_thresh``, ``score_thresh``, anchor
values, ``eval_scales``, ``dice_weight``, ``deployed``, ...) load through ``validate --ckpt_path``, the export command
and ``Task.load_from_checkpoint`` with the settings and weights they were trained with.

Each task is built through the CLI with settings away from the defaults and saved untrained, its weights moved away
from the configs' seeded init (they are the ones to find again); its hyper-parameters are then written in the old
flat layout, spelled out here from the old signatures rather than by :mod:`mobilenetv2_dense.tasks.legacy`'s table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from mobilenetv2_dense.commands.cli import cli_main, json_default
from mobilenetv2_dense.commands.export import build_task
from mobilenetv2_dense.tasks.classification import ClassificationTask
from mobilenetv2_dense.tasks.detection import DetectionTask
from mobilenetv2_dense.tasks.joint import JointTask
from mobilenetv2_dense.tasks.legacy import upgrade_hyperparameters
from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask
from tests.conftest import joint_options
from tests.deploy.runs import CLS_CONFIG, CLS_DATA, DET_CONFIG, DET_POST, QUIET, SEG_CONFIG, SEG_DATA, det_data

pytestmark = pytest.mark.usefixtures("one_thread")

PRIVATE = ("_class_path", "_instantiator")
# Model options away from the defaults: built with them, then validated and exported without them, so the values
# found again come from the checkpoint (the command line would win over it).
DET_MODEL = [*DET_POST, "--model.init_args.backbone.width_mult", "0.35",
             "--model.init_args.backbone.frozen_stages", "1",
             "--model.init_args.loss.iou_threshold", "0.45", "--model.init_args.loss.neg_pos_ratio", "2.0",
             "--model.init_args.post_processing.score_thresh", "0.05", "--model.init_args.post_processing.nms_thresh",
             "0.5", "--model.init_args.anchors.min_scale", "0.15", "--model.init_args.anchors.aspect_ratios",
             "[1.0, 2.0, 0.5]", "--model.init_args.anchors.scales", "[0.1, 0.25, 0.4, 0.55, 0.7, 0.85]"]
SEG_MODEL = ["--model.init_args.backbone.width_mult", "0.35", "--model.init_args.backbone.frozen_stages", "1",
             "--model.init_args.loss.dice_weight", "0.3", "--model.init_args.evaluation.flip", "true",
             "--model.init_args.evaluation.scales", "[0.75, 1.0]", "--model.init_args.channels_last", "false"]


def det_options(root: Path) -> list[str]:
    """The detection config's data: the generated shapes at 64 x 64."""
    return ["--config", DET_CONFIG, *det_data(root), "--data.init_args.image_size", "64"]


def _fields(value: Any) -> dict[str, Any]:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)


# The flat layouts of the task signatures before 7c2d14d (git show 7c2d14d^:tasks/<task>/module.py).
def old_detection(hp: dict) -> dict:
    backbone, loss, post, anchors = (_fields(hp[k]) for k in ("backbone", "loss", "post_processing", "anchors"))
    return {"num_classes": hp["num_classes"], "width_mult": backbone["width_mult"],
            "backbone_weights": backbone["weights"], "backbone_init": backbone["init"],
            "frozen_stages": backbone["frozen_stages"], "norm_eval": backbone["norm_eval"],
            "classification_loss": loss["classification"], "neg_pos_ratio": loss["neg_pos_ratio"],
            "min_negatives_per_image": loss["min_negatives_per_image"], "iou_thresh": loss["iou_threshold"],
            **post, "evaluator": hp["evaluator"], **anchors, "fit_anchors": hp["fit_anchors"]}


def old_segmentation(hp: dict) -> dict:
    backbone, evaluation = _fields(hp["backbone"]), _fields(hp["evaluation"])
    return {"num_classes": hp["num_classes"], "width_mult": backbone["width_mult"],
            "output_stride": hp["output_stride"], "head": hp["head"], "decoder": hp["decoder"],
            "backbone_weights": backbone["weights"],
            "frozen_stages": backbone["frozen_stages"], "norm_eval": backbone["norm_eval"],
            "dice_weight": _fields(hp["loss"])["dice_weight"], "eval_output_stride": evaluation["output_stride"],
            "eval_scales": evaluation["scales"], "eval_flip": evaluation["flip"]}


def old_joint(hp: dict) -> dict:
    backbone, loss, weights = _fields(hp["backbone"]), _fields(hp["loss"]), _fields(hp["loss_weights"])
    return {"num_classes": hp["num_classes"], "num_seg_classes": hp["num_seg_classes"],
            "width_mult": backbone["width_mult"], "decoder": hp["decoder"] is not None,
            "decoder_feature": hp["decoder"] or "stage2", "backbone_weights": backbone["weights"],
            "frozen_stages": backbone["frozen_stages"], "norm_eval": backbone["norm_eval"],
            "detection_weight": weights["detection"], "segmentation_weight": weights["segmentation"],
            "dice_weight": _fields(hp["segmentation_loss"])["dice_weight"],
            "classification_loss": loss["classification"], "neg_pos_ratio": loss["neg_pos_ratio"],
            "min_negatives_per_image": loss["min_negatives_per_image"], **_fields(hp["post_processing"]),
            "evaluator": hp["evaluator"], **_fields(hp["anchors"]), "fit_anchors": hp["fit_anchors"]}


def old_classification(hp: dict) -> dict:
    backbone = _fields(hp["backbone"])
    return {"num_classes": hp["num_classes"], "width_mult": backbone["width_mult"], "dropout": hp["dropout"],
            "backbone_weights": backbone["weights"], "frozen_stages": backbone["frozen_stages"],
            "label_smoothing": hp["label_smoothing"]}


def write_old(new: Path, old: Path, flat) -> None:
    """``new`` with its hyper-parameters in the old flat layout (the optimization block was already a dict)."""
    checkpoint = torch.load(new, weights_only=True)
    hp = checkpoint["hyper_parameters"]
    optimization = {k: v for k, v in _fields(hp["optimization"]).items() if k != "max_nonfinite_steps"}  # newer
    checkpoint["hyper_parameters"] = {"_class_path": hp["_class_path"], **flat(hp), "optimization": optimization,
                                      "channels_last": hp["channels_last"], "deployed": None,
                                      "inference": "eager", "_instantiator": hp["_instantiator"]}
    torch.save(checkpoint, old)


def saved(folder: Path, args: list[str], flat) -> tuple[Path, Path]:
    """(today's checkpoint, the same in the old layout) of the task the CLI builds from ``args``, untrained."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.chdir(folder)  # the configs' relative data/ and runs/
        warnings.filterwarnings("ignore", "LightningCLI's args parameter is intended")
        cli = cli_main([*args, *QUIET, "--trainer.logger", "false"], run=False)
        generator = torch.Generator().manual_seed(7)
        for tensor in cli.model.state_dict().values():  # away from the seeded init any rebuilt task starts from
            if tensor.is_floating_point():
                tensor.add_(torch.rand(tensor.shape, generator=generator))
        cli.trainer.strategy.connect(cli.model)
        cli.trainer.save_checkpoint(folder / "new.ckpt")
    write_old(folder / "new.ckpt", folder / "old.ckpt", flat)
    return folder / "new.ckpt", folder / "old.ckpt"


@pytest.fixture(scope="module")
def det_ckpts(shapes_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return saved(tmp_path_factory.mktemp("legacy_det"), [*det_options(shapes_coco), *DET_MODEL], old_detection)


@pytest.fixture(scope="module")
def seg_ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return saved(tmp_path_factory.mktemp("legacy_seg"), ["--config", SEG_CONFIG, *SEG_DATA, *SEG_MODEL],
                 old_segmentation)


def settings(hparams: Any) -> dict[str, Any]:
    """A task's hyper-parameters without Lightning's private keys, as JSON (blocks as dicts, tuples as lists)."""
    return json.loads(json.dumps({k: v for k, v in dict(hparams).items() if k not in PRIVATE}, default=json_default))


def same_weights(state: dict[str, torch.Tensor], checkpoint: Path) -> bool:
    saved_state = torch.load(checkpoint, weights_only=True)["state_dict"]
    return state.keys() == saved_state.keys() and all(torch.equal(state[k], saved_state[k]) for k in state)


# ----------------------------------------------------------------------------------------------- the mapping
def test_old_detection_names_go_into_their_blocks(caplog) -> None:
    old = {"_class_path": "mobilenetv2_dense.tasks.detection.DetectionTask", "num_classes": 4, "width_mult": 0.5,
           "backbone_weights": None, "backbone_init": "normal", "frozen_stages": -1, "norm_eval": False,
           "classification_loss": "focal", "neg_pos_ratio": 3.0, "min_negatives_per_image": 3, "iou_thresh": 0.4,
           "score_thresh": 0.01, "nms_thresh": 0.45, "detections_per_img": 100, "topk_candidates": 300,
           "evaluator": "faster_coco_eval", "min_scale": 0.2, "max_scale": 0.95, "aspect_ratios": [1.0, 2.0],
           "interpolated_scale_aspect_ratio": 1.07, "reduce_boxes_in_lowest_layer": True, "scales": None,
           "lowest_layer_boxes": [[0.1, 1.0]], "fit_anchors": True, "optimization": {"lr": 0.003},
           "channels_last": True, "deployed": "model.onnx", "inference": "eager", "colour": "red"}
    with caplog.at_level(logging.INFO):
        new = upgrade_hyperparameters(old, source="old-det.ckpt")
        assert upgrade_hyperparameters(old, source="old-det.ckpt") == new
    assert new == {"_class_path": old["_class_path"], "num_classes": 4, "evaluator": "faster_coco_eval",
                   "fit_anchors": True, "optimization": {"lr": 0.003}, "channels_last": True, "inference": "model.onnx",
                   "colour": "red",  # unknown: kept for the task's error to name
                   "backbone": {"width_mult": 0.5, "weights": None, "init": "normal", "frozen_stages": -1,
                                "norm_eval": False},
                   "loss": {"classification": "focal", "neg_pos_ratio": 3.0, "min_negatives_per_image": 3,
                            "iou_threshold": 0.4},
                   "post_processing": {"score_thresh": 0.01, "nms_thresh": 0.45, "detections_per_img": 100,
                                       "topk_candidates": 300},
                   "anchors": {"min_scale": 0.2, "max_scale": 0.95, "aspect_ratios": [1.0, 2.0],
                               "interpolated_scale_aspect_ratio": 1.07, "reduce_boxes_in_lowest_layer": True,
                               "scales": None, "lowest_layer_boxes": [[0.1, 1.0]]}}
    notes = [r.getMessage() for r in caplog.records if "old-det.ckpt" in r.getMessage()]
    assert len(notes) == 1 and "width_mult" in notes[0] and "backbone" in notes[0]  # once per checkpoint
    assert upgrade_hyperparameters(new, source="today.ckpt") == new  # today's layout passes as it is


def test_old_joint_and_segmentation_names() -> None:
    """``dice_weight`` goes to each task's segmentation loss block; the joint decoder becomes its feature or null;
    the blocks of a layout between the two (anchors and the SSD loss already blocks, 6ba2baa..7c2d14d) stay."""
    from mobilenetv2_dense.heads import AnchorSettings, SSDLossSettings

    joint = {"num_seg_classes": 5, "width_mult": 0.5, "decoder": True, "decoder_feature": "stage3",
             "dice_weight": 0.5, "detection_weight": 2.0, "segmentation_weight": 0.5,
             "anchors": AnchorSettings(min_scale=0.1), "loss": SSDLossSettings(neg_pos_ratio=2.0),
             "optimization": None, "deployed": None, "inference": "fused"}
    assert upgrade_hyperparameters(joint, "mobilenetv2_dense.tasks.joint.JointTask") == {
        "num_seg_classes": 5, "backbone": {"width_mult": 0.5}, "decoder": "stage3",
        "segmentation_loss": {"dice_weight": 0.5}, "loss_weights": {"detection": 2.0, "segmentation": 0.5},
        "anchors": joint["anchors"], "loss": joint["loss"], "inference": "fused"}
    assert upgrade_hyperparameters({**joint, "decoder": False})["decoder"] is None  # joint told by its own keys
    segmentation = {"decoder": True, "dice_weight": 0.5, "eval_output_stride": 8, "eval_scales": [1.0],
                    "eval_flip": True}
    assert upgrade_hyperparameters(segmentation, SegmentationTask) == {
        "decoder": True, "loss": {"dice_weight": 0.5},
        "evaluation": {"output_stride": 8, "scales": [1.0], "flip": True}}


# ------------------------------------------------------------------------------------------ detection, loaded
def test_validate_reads_an_old_detection_checkpoint(det_ckpts, shapes_coco: Path, tmp_path: Path, monkeypatch) -> None:
    new, old = det_ckpts
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["validate", *det_options(shapes_coco), *QUIET, "--trainer.logger", "false",
                    "--trainer.limit_val_batches", "1", "--ckpt_path", str(old)])
    assert settings(cli.model.hparams) == settings(torch.load(new, weights_only=True)["hyper_parameters"])
    network = cli.model.model  # built from them: the anchors and thresholds it runs with
    assert network.anchor_settings.min_scale == 0.15 and network.anchor_settings.aspect_ratios == (1.0, 2.0, 0.5)
    assert network.post_processing.score_thresh == 0.05 and cli.model.criterion.settings.iou_threshold == 0.45
    assert same_weights(cli.model.state_dict(), new)


def test_export_reads_an_old_detection_checkpoint(det_ckpts, shapes_coco: Path, tmp_path: Path, monkeypatch) -> None:
    """The step of the export and benchmark commands that reads the checkpoint (:func:`build_task`); what follows it
    (graph, ONNX file, sidecar, parity: ~10 s of CPU per export) reads only the task it built and is covered on
    today's checkpoints by tests/deploy/test_export.py."""
    new, old = det_ckpts
    monkeypatch.chdir(tmp_path)
    task, _, _ = build_task(DET_CONFIG, str(old), det_options(shapes_coco)[2:])
    assert settings(task.hparams) == settings(torch.load(new, weights_only=True)["hyper_parameters"])
    assert task.model.anchor_settings.scales == (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)
    assert same_weights(task.state_dict(), new)


@pytest.mark.parametrize("built_in", ["cli", "python"])
def test_load_from_checkpoint_reads_an_old_detection_checkpoint(det_ckpts, tmp_path: Path, built_in: str) -> None:
    """A CLI checkpoint (class path, instantiator) and one a task built in Python wrote (neither); an unknown key
    is named, not dropped."""
    new, old = det_ckpts
    if built_in == "python":
        checkpoint = torch.load(old, weights_only=True)
        checkpoint["hyper_parameters"] = {k: v for k, v in checkpoint["hyper_parameters"].items() if k not in PRIVATE}
        torch.save(checkpoint, old := tmp_path / "python.ckpt")
    task = DetectionTask.load_from_checkpoint(old)
    assert settings(task.hparams) == settings(torch.load(new, weights_only=True)["hyper_parameters"])
    assert same_weights(task.state_dict(), new)
    checkpoint = torch.load(old, weights_only=True)
    checkpoint["hyper_parameters"]["colour"] = "red"
    torch.save(checkpoint, tmp_path / "unknown.ckpt")
    with pytest.raises(ValueError, match="colour"):
        DetectionTask.load_from_checkpoint(tmp_path / "unknown.ckpt")


# ------------------------------------------------------------------------------------ segmentation, loaded
def test_validate_and_load_an_old_segmentation_checkpoint(seg_ckpts, tmp_path: Path, monkeypatch) -> None:
    new, old = seg_ckpts
    expected = settings(torch.load(new, weights_only=True)["hyper_parameters"])
    monkeypatch.chdir(old.parent)  # the generated shapes written when the checkpoint was built
    cli = cli_main(["validate", "--config", SEG_CONFIG, *SEG_DATA, *QUIET, "--trainer.logger", "false",
                    "--trainer.limit_val_batches", "1", "--ckpt_path", str(old)])
    assert settings(cli.model.hparams) == expected
    assert cli.model.criterion.settings.dice_weight == 0.3 and cli.model.evaluation.scales == (0.75, 1.0)
    assert same_weights(cli.model.state_dict(), new)
    task = SegmentationTask.load_from_checkpoint(old)
    assert settings(task.hparams) == expected and same_weights(task.state_dict(), new)


# ------------------------------------------------------------------------------------------ joint, classification
def test_load_old_joint_and_classification_checkpoints(shapes_coco: Path, tmp_path: Path) -> None:
    joint_args = [*joint_options(shapes_coco), "--model.init_args.decoder", "stage3",
                  "--model.init_args.loss_weights.detection", "2.0"]
    for folder, args, flat, task_class in [
            ("joint", joint_args, old_joint, JointTask),
            ("cls", ["--config", CLS_CONFIG, *CLS_DATA, "--model.init_args.backbone.width_mult", "0.35",
                     "--model.init_args.backbone.frozen_stages", "2"], old_classification, ClassificationTask)]:
        (tmp_path / folder).mkdir()
        new, old = saved(tmp_path / folder, args, flat)
        task = task_class.load_from_checkpoint(old)
        assert settings(task.hparams) == settings(torch.load(new, weights_only=True)["hyper_parameters"])
        assert same_weights(task.state_dict(), new)
    assert task.hparams.backbone.frozen_stages == 2 and not all(p.requires_grad for p in task.model.parameters())
