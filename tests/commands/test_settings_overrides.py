"""Settings blocks set from the command line as a user types them: a typed value and a ``null`` per block, through
``cli_main`` with the shipped configs (the YAML form is what the configs themselves exercise)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from pathlib import Path

import pytest
import yaml

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.commands.cli import cli_main, nested_nulls
from mobilenetv2_dense.heads import AnchorSettings, PostProcessing
from mobilenetv2_dense.tasks.joint import LossWeights
from mobilenetv2_dense.tasks.optim import Optimization
from mobilenetv2_dense.tasks.segmentation import SegmentationEvaluation, SegmentationLossSettings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def parsed_model(config: str, *overrides: str):
    """The task ``fit --config config overrides`` builds (no data is read, nothing is trained)."""
    # num_classes given: the real datasets are not on this machine, and the task is all this reads
    cli = cli_main(["--config", str(CONFIGS / config), *overrides, "--model.init_args.backbone.weights", "null",
                    "--model.init_args.num_classes", "21"], run=False)
    return cli.model


def _optional(annotation: typing.Any) -> bool:
    """Whether ``annotation`` is ``X | None``."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return union and type(None) in typing.get_args(annotation)


def _settings_blocks(annotation: typing.Any) -> list[type]:
    """The settings dataclasses an argument's annotation names (``AnchorSettings``, ``DetectionAugment | None``)."""
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (
        annotation,)
    return [member for member in members if dataclasses.is_dataclass(member)]


def optional_options() -> list[tuple[str, str]]:
    """``(config, option)`` for every argument typed ``X | None`` of the shipped configs' tasks and data modules, and
    every such field of their settings blocks, each once (from the first config, by name, whose classes take it):
    top-level arguments (``model.init_args.decoder``) and block fields (``model.init_args.anchors.scales``)."""
    found: dict[tuple[str, str], str] = {}
    for config in sorted(CONFIGS.glob("*.yaml")):
        spec = yaml.safe_load(config.read_text())
        for section in ("model", "data"):
            module, _, name = spec[section]["class_path"].rpartition(".")
            for owner in getattr(importlib.import_module(module), name).__mro__:
                if "__init__" not in vars(owner) or not owner.__module__.startswith("mobilenetv2_dense"):
                    continue
                hints = typing.get_type_hints(owner.__init__)
                for argument in inspect.signature(owner.__init__).parameters:
                    annotation = hints.get(argument)
                    if _optional(annotation):
                        found.setdefault((owner.__name__, f"{section}.init_args.{argument}"), config.name)
                    for block in _settings_blocks(annotation):
                        for field, field_type in typing.get_type_hints(block).items():
                            if _optional(field_type):
                                found.setdefault((block.__name__, f"{section}.init_args.{argument}.{field}"),
                                                 config.name)
    return sorted({(config, option) for (_, option), config in found.items()})


def test_a_null_for_a_settings_field_is_rewritten_as_a_one_key_block():
    assert nested_nulls(["fit", "--model.init_args.optimization.reference_batch_size", "null", "--x", "null"]) == [
        "fit", "--model.init_args.optimization", '{"reference_batch_size": null}', "--x", "null"]
    assert nested_nulls(["--model.init_args.optimization.reference_batch_size=null"]) == [
        "--model.init_args.optimization", '{"reference_batch_size": null}']
    # a task argument (one level under init_args) and a typed value pass through
    kept = ["--model.init_args.num_seg_classes", "null", "--model.init_args.optimization.lr", "0.1"]
    assert nested_nulls(kept) == kept


@pytest.mark.parametrize("config", ["ssdlite_mobilenetv2_coco.yaml", "deeplabv3lite_mobilenetv2_voc.yaml"])
def test_optimization_takes_a_typed_value_and_a_null_from_the_command_line(config):
    """The documented ``reference_batch_size: null`` (use the lr as given) typed on the command line, beside a typed
    lr: both apply, and the config's other optimisation values stay."""
    configured = parsed_model(config).optimization
    assert configured.reference_batch_size is not None
    task = parsed_model(config, "--model.init_args.optimization.reference_batch_size", "null",
                        "--model.init_args.optimization.lr", "0.02")
    assert isinstance(task.optimization, Optimization)
    assert task.optimization.reference_batch_size is None and task.optimization.lr == 0.02
    assert task.optimization.optimizer == configured.optimizer
    assert task.optimization.weight_decay == configured.weight_decay


def test_anchors_take_typed_values_and_a_null_from_the_command_line():
    """The anchors block: a typed list and a float set fields; a later null gives an optional field back."""
    scales = "[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]"
    task = parsed_model("ssdlite_mobilenetv2_coco.yaml", "--model.init_args.anchors.scales", scales,
                        "--model.init_args.anchors.interpolated_scale_aspect_ratio", "2.0")
    settings = task.model.anchor_settings
    assert isinstance(settings, AnchorSettings) and AnchorSettings(**task.hparams.anchors) == settings
    assert settings.scales == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6) and settings.interpolated_scale_aspect_ratio == 2.0
    assert settings.min_scale == AnchorSettings().min_scale  # the fields not typed keep their values
    task = parsed_model("ssdlite_mobilenetv2_coco.yaml", "--model.init_args.anchors.scales", scales,
                        "--model.init_args.anchors.scales", "null")
    assert task.model.anchor_settings.scales is None


@pytest.mark.parametrize("config", ["ssdlite_mobilenetv2_coco.yaml", "ssdlite_deeplabv3lite_coco.yaml"])
def test_post_processing_takes_a_typed_value_from_the_command_line(config):
    configured = parsed_model(config).model.post_processing
    task = parsed_model(config, "--model.init_args.post_processing.score_thresh", "0.3")
    post = task.model.post_processing
    assert isinstance(post, PostProcessing) and post.score_thresh == 0.3
    assert (post.nms_thresh, post.topk_candidates) == (configured.nms_thresh, configured.topk_candidates)


def test_a_settings_value_out_of_range_is_refused_with_the_field_named():
    with pytest.raises(ValueError, match=r"PostProcessing: nms_thresh must be in \(0, 1\], got 1.5"):
        parsed_model("ssdlite_mobilenetv2_coco.yaml", "--model.init_args.post_processing.nms_thresh", "1.5")
    with pytest.raises(ValueError, match=r"AnchorSettings: need 0 < min_scale <= max_scale"):
        parsed_model("ssdlite_mobilenetv2_coco.yaml", "--model.init_args.anchors.min_scale", "0.99")


def test_segmentation_evaluation_takes_typed_values_and_a_null_from_the_command_line():
    """The paper's OS8 + MF evaluation typed as docs/segmentation.md gives it, then the output stride set back to
    null."""
    config = "deeplabv3lite_mobilenetv2_voc.yaml"
    paper = ["--model.init_args.evaluation.output_stride", "8", "--model.init_args.evaluation.flip", "true",
             "--model.init_args.evaluation.scales", "[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]"]
    task = parsed_model(config, *paper)
    assert isinstance(task.evaluation, SegmentationEvaluation)
    assert (task.evaluation.output_stride, task.evaluation.flip) == (8, True)
    assert task.evaluation.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    task = parsed_model(config, *paper, "--model.init_args.evaluation.output_stride", "null")
    assert task.evaluation.output_stride is None and task.evaluation.flip


@pytest.mark.parametrize("config", ["ssdlite_mobilenetv2_coco.yaml", "deeplabv3lite_mobilenetv2_voc.yaml",
                                    "ssdlite_deeplabv3lite_voc.yaml"])
def test_backbone_takes_typed_values_and_a_null_from_the_command_line(config, capsys):
    """The backbone block: a typed width and init reach the network; ``weights`` (ImageNet in two of these
    configs) is set back to null; the fields not typed keep the config's values."""
    configured = parsed_model(config).hparams.backbone
    task = parsed_model(config, "--model.init_args.backbone.width_mult", "0.35",
                        "--model.init_args.backbone.init", "normal", "--model.init_args.backbone.weights", "null")
    backbone = BackboneSettings(**task.hparams.backbone)
    assert (backbone.width_mult, backbone.init, backbone.weights) == (0.35, "normal", None)
    assert (backbone.norm_eval, backbone.frozen_stages) == (configured["norm_eval"], configured["frozen_stages"])
    stem = task.model.backbone.stem[0]
    assert stem.out_channels == 16  # make_divisible(32 * 0.35, 8)
    assert abs(stem.weight.std().item() - 0.03) < 0.01  # N(0, 0.03)
    with pytest.raises(SystemExit):  # jsonargparse checks the Literal and names the option
        parsed_model(config, "--model.init_args.backbone.init", "xavier")
    assert "Expected a typing.Literal['kaiming', 'normal']. Got value: xavier" in capsys.readouterr().err


def test_segmentation_loss_takes_a_typed_value_from_the_command_line():
    task = parsed_model("deeplabv3lite_mobilenetv2_voc.yaml", "--model.init_args.loss.dice_weight", "0.5")
    assert isinstance(task.criterion.settings, SegmentationLossSettings)
    assert task.criterion.settings.dice_weight == 0.5 and task.criterion.dice is not None
    with pytest.raises(ValueError, match="SegmentationLossSettings: dice_weight must be >= 0, got -1.0"):
        parsed_model("deeplabv3lite_mobilenetv2_voc.yaml", "--model.init_args.loss.dice_weight", "-1")


def test_joint_blocks_take_typed_values_and_a_null_from_the_command_line():
    """The joint task's loss weights, segmentation loss and decoder from the command line; decoder null drops it."""
    config = "ssdlite_deeplabv3lite_voc.yaml"
    task = parsed_model(config, "--model.init_args.loss_weights.segmentation", "30",
                        "--model.init_args.segmentation_loss.dice_weight", "0.5",
                        "--model.init_args.decoder", "stage6_expansion")
    assert isinstance(task.hparams.loss_weights, dict | LossWeights)
    assert (task.criterion.detection_weight, task.criterion.segmentation_weight) == (1.0, 30.0)
    assert task.criterion.segmentation.settings.dice_weight == 0.5
    assert task.model.segmentation_decoder is not None and task.model.low_level_feature == "stage6_expansion"
    task = parsed_model(config, "--model.init_args.decoder", "stage6_expansion", "--model.init_args.decoder", "null")
    assert task.model.segmentation_decoder is None and task.model.low_level_feature is None


def test_inference_takes_a_mode_or_an_exported_file_and_refuses_anything_else():
    task = parsed_model("deeplabv3lite_mobilenetv2_voc.yaml", "--model.init_args.inference", "fused")
    assert task.inference == "fused"
    with pytest.raises(ValueError, match=r"inference must be 'eager', 'fused', 'compiled' or an exported .onnx / "
                                         r"\.pte / \.tflite file, got 'model.engine'"):
        parsed_model("deeplabv3lite_mobilenetv2_voc.yaml", "--model.init_args.inference", "model.engine")


@pytest.mark.parametrize(("config", "option"), optional_options(), ids=lambda value: value.removesuffix(".yaml"))
def test_every_optional_argument_takes_a_null_from_the_command_line(config, option, capsys):
    """``--<option> null`` as a user types it, parsed by ``cli_main`` and read back from ``--print_config`` (parsing
    only: nothing is built)."""
    with pytest.raises(SystemExit) as stop:
        cli_main(["--config", str(CONFIGS / config), f"--{option}", "null", "--print_config"], run=False)
    printed = capsys.readouterr()
    assert stop.value.code in (0, None), printed.err[-2000:]
    value = yaml.safe_load(printed.out)
    for key in option.split("."):
        value = value[key]
    assert value is None


def test_the_optional_arguments_cover_every_kind_of_option():
    """The list above reaches the task and data modules' arguments and the settings blocks' fields (a broken walk
    over the signatures would leave it short)."""
    options = {option for _, option in optional_options()}
    assert {"model.init_args.backbone.weights", "model.init_args.optimization.reference_batch_size",
            "model.init_args.anchors.scales", "model.init_args.anchors.lowest_layer_boxes",
            "model.init_args.evaluation.output_stride", "model.init_args.num_seg_classes", "model.init_args.decoder",
            "data.init_args.augment", "data.init_args.val_batch_size", "data.init_args.root"} <= options


def test_the_nulls_reach_the_joint_task():
    """All of the joint task's optional arguments null at once, built: each reaches the task as ``None``."""
    nulls = ["model.init_args.num_seg_classes", "model.init_args.decoder", "model.init_args.anchors.scales",
             "model.init_args.anchors.lowest_layer_boxes", "model.init_args.optimization.reference_batch_size"]
    typed = [arg for option in nulls for arg in (f"--{option}", "null")]
    task = parsed_model("ssdlite_deeplabv3lite_coco.yaml", *typed)
    settings = task.model.anchor_settings
    assert (settings.scales, settings.lowest_layer_boxes) == (None, None)
    assert task.optimization.reference_batch_size is None and task.model.segmentation_decoder is None
    assert task.num_seg_classes == 21 + 1  # None: the detector's classes and the background
