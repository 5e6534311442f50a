"""Checkpoints written before the settings blocks: their flat hyper-parameters read as today's blocks.

Until 7c2d14d (and block by block in the commits before it: 8e9a39d anchors, 0198a57 post-processing, 6ba2baa the
SSD loss, 6b7b16c segmentation evaluation) a task took its options one by one, and its checkpoints keep them so;
jsonargparse then refuses such a checkpoint (``Option 'width_mult' is not accepted``). :func:`upgrade_hyperparameters`
maps them (the changelog's "Renamed options"):

- ``width_mult``, ``backbone_weights``, ``backbone_init``, ``frozen_stages``, ``norm_eval`` -> ``backbone``
  (``width_mult``, ``weights``, ``init``, ``frozen_stages``, ``norm_eval``);
- ``classification_loss``, ``neg_pos_ratio``, ``min_negatives_per_image``, ``iou_thresh`` -> ``loss``
  (``classification``, ``neg_pos_ratio``, ``min_negatives_per_image``, ``iou_threshold``);
- ``score_thresh``, ``nms_thresh``, ``detections_per_img``, ``topk_candidates`` -> ``post_processing``;
- ``min_scale``, ``max_scale``, ``aspect_ratios``, ``interpolated_scale_aspect_ratio``,
  ``reduce_boxes_in_lowest_layer``, ``scales``, ``lowest_layer_boxes`` -> ``anchors``;
- ``eval_output_stride``, ``eval_scales``, ``eval_flip`` -> ``evaluation`` (``output_stride``, ``scales``, ``flip``);
- ``dice_weight`` -> ``loss.dice_weight`` (segmentation), ``segmentation_loss.dice_weight`` (joint);
- ``detection_weight``, ``segmentation_weight`` -> ``loss_weights`` (``detection``, ``segmentation``);
- the joint task's ``decoder: true`` + ``decoder_feature: <feature>`` -> ``decoder: <feature>`` (``false``: null);
- ``deployed: <file>`` -> ``inference: <file>`` (an exported file ran whatever ``inference`` said);
- ``optimization: null`` -> left out, i.e. ``Optimization()``, as it meant.

``deployed: null``, and ``decoder_feature`` without a decoder, meant nothing and are left out; any other key is kept
as it is, so the task's own error names what it does not take. The weights' ``state_dict`` keys did not change: only
the hyper-parameters are converted.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

# old flat name -> (block, field); the joint task's dice_weight and decoder are handled apart
_MOVED: dict[str, tuple[str, str]] = {
    "width_mult": ("backbone", "width_mult"),
    "backbone_weights": ("backbone", "weights"),
    "backbone_init": ("backbone", "init"),
    "frozen_stages": ("backbone", "frozen_stages"),
    "norm_eval": ("backbone", "norm_eval"),
    "classification_loss": ("loss", "classification"),
    "neg_pos_ratio": ("loss", "neg_pos_ratio"),
    "min_negatives_per_image": ("loss", "min_negatives_per_image"),
    "iou_thresh": ("loss", "iou_threshold"),
    "score_thresh": ("post_processing", "score_thresh"),
    "nms_thresh": ("post_processing", "nms_thresh"),
    "detections_per_img": ("post_processing", "detections_per_img"),
    "topk_candidates": ("post_processing", "topk_candidates"),
    "min_scale": ("anchors", "min_scale"),
    "max_scale": ("anchors", "max_scale"),
    "aspect_ratios": ("anchors", "aspect_ratios"),
    "interpolated_scale_aspect_ratio": ("anchors", "interpolated_scale_aspect_ratio"),
    "reduce_boxes_in_lowest_layer": ("anchors", "reduce_boxes_in_lowest_layer"),
    "scales": ("anchors", "scales"),
    "lowest_layer_boxes": ("anchors", "lowest_layer_boxes"),
    "eval_output_stride": ("evaluation", "output_stride"),
    "eval_scales": ("evaluation", "scales"),
    "eval_flip": ("evaluation", "flip"),
    "detection_weight": ("loss_weights", "detection"),
    "segmentation_weight": ("loss_weights", "segmentation"),
}
# Keys only the joint task ever had: they tell a joint checkpoint without a class path (built in Python).
_JOINT_ONLY = ("num_seg_classes", "decoder_feature", "detection_weight", "segmentation_weight")
_noted: set[str] = set()  # checkpoints whose conversion was already reported


def _task_class(class_path: str | None) -> type | None:
    """The class ``class_path`` names, or ``None`` when it names none that imports."""
    module, _, name = (class_path or "").rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def _is_joint(hparams: dict[str, Any], task: str | type | None) -> bool:
    """Whether ``task`` (a class path or a task class) is the joint task; without one, told by the old keys."""
    if isinstance(task, str):
        task = _task_class(task)
    if isinstance(task, type) and getattr(task, "task_name", ""):
        return task.task_name == "joint"
    return any(key in hparams for key in _JOINT_ONLY)


def _block(value: Any) -> dict[str, Any]:
    """A settings block as a dict: the checkpoint may hold it as a dict (CLI) or a dataclass (built in Python)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return dict(value or {})


def upgrade_hyperparameters(hparams: dict[str, Any], class_path: str | type | None = None,
                            source: str | Path | None = None) -> dict[str, Any]:
    """A task's checkpoint hyper-parameters in today's layout (see the module docstring); today's pass unchanged.

    Args:
        hparams: the checkpoint's ``hyper_parameters`` (``_class_path`` and ``_instantiator`` may be among them).
        class_path: the task's class path or class, which tells where the joint task's ``dice_weight`` and
            ``decoder`` go; ``None``: ``hparams['_class_path']``, else the joint task's own old keys tell.
        source: the checkpoint, named once per process in the note that its layout was converted.

    Returns a new dict; blocks that received old keys are dicts (merged over the block when the checkpoint already
    had one), the other values as they were.
    """
    out = dict(hparams)
    moved = [key for key in out if key in _MOVED or key in ("dice_weight", "deployed")]
    joint = _is_joint(out, class_path if class_path is not None else out.get("_class_path"))
    targets: set[str] = set()
    for key in moved:
        if key == "deployed":
            deployed = out.pop(key)
            if deployed is not None:  # an exported file ran instead of any inference mode
                out["inference"] = str(deployed)
                targets.add("inference")
            continue
        block, field = _MOVED.get(key, ("segmentation_loss" if joint else "loss", "dice_weight"))
        if block not in targets:
            out[block] = _block(out.get(block))  # merged over the block a later layout may already hold
            targets.add(block)
        out[block][field] = out.pop(key)
    if joint and isinstance(out.get("decoder"), bool):
        moved.append("decoder")
        targets.add("decoder")
        feature = out.pop("decoder_feature", "stage2")  # the old default feature
        out["decoder"] = feature if out["decoder"] else None
    if "optimization" in out and out["optimization"] is None:  # None meant the default Optimization()
        moved.append("optimization")
        del out["optimization"]
    if moved and source is not None and str(source) not in _noted:
        _noted.add(str(source))
        rank_zero_info(f"{source} was written before the settings blocks: {', '.join(moved)} read as "
                       f"{', '.join(sorted(targets)) or 'the defaults'} (the changelog's 'Renamed options'); the "
                       "weights load as they are")
    return out


def upgraded_checkpoint(path: Any, task: type, weights_only: bool | None = None) -> io.BytesIO | None:
    """The checkpoint file ``path`` with its hyper-parameters in today's layout, in memory, for Lightning's
    ``load_from_checkpoint``; ``None`` when there is nothing to convert (today's layout, or not a local file).

    The blocks are given as dicts and Lightning builds the task through LightningCLI's instantiator (as it does for a
    checkpoint the CLI wrote): jsonargparse turns them into the settings dataclasses over the signature's defaults.
    A key the task does not take raises here, naming it (Lightning would drop it). The tensors are read onto the CPU.
    """
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        return None
    checkpoint = torch.load(path, map_location="cpu", mmap=True,
                            weights_only=True if weights_only is None else weights_only)
    hparams = checkpoint.get("hyper_parameters") or {}
    upgraded = upgrade_hyperparameters(hparams, task, source=path)
    if upgraded == hparams:
        return None
    built = _task_class(upgraded.get("_class_path")) or task  # Lightning builds the class the checkpoint names
    parameters = inspect.signature(built.__init__).parameters
    unknown = [key for key in upgraded if not key.startswith("_") and key not in parameters]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        # Lightning would drop them without a word and build the task from its defaults
        raise ValueError(f"{task.__name__}.load_from_checkpoint: {path} holds hyper-parameters {unknown} that "
                         f"{built.__name__} does not take (after its options of the layout before the settings "
                         "blocks were read as today's); load it with the task class that wrote it, or remove them "
                         "from the checkpoint's 'hyper_parameters'")
    upgraded = {key: _block(value) if dataclasses.is_dataclass(value) else value for key, value in upgraded.items()}
    upgraded.setdefault("_instantiator", "lightning.pytorch.cli.instantiate_module")
    checkpoint["hyper_parameters"] = upgraded
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return buffer
