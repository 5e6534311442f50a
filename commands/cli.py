"""The project's LightningCLI: what a checkpoint given with ``--ckpt_path`` may change in the config, and what not.

Precedence for the model's arguments, lowest first:

    signature defaults < --config files < the checkpoint's hyper-parameters < options typed on the command line

A model trained with ``--model.init_args.backbone.width_mult 0.5`` reloads at width 0.5 under a config that says 1.0,
and ``validate --ckpt_path best.ckpt --model.init_args.evaluation.output_stride 8`` evaluates at output stride 8
whatever the checkpoint says: evaluation-time options (the ``evaluation`` block, ``post_processing.score_thresh``,
``post_processing.nms_thresh``) are ordinary arguments. Lightning 2.6's own
``_parse_ckpt_path`` applies the checkpoint last, over the command line too. Here the arguments are parsed once more
in precedence order: the subcommand's ``--config`` files, then the checkpoint's hyper-parameters as one ``--model``
option, then every other option as typed. ``backbone.weights`` is always set to ``None`` under ``--ckpt_path``: the
checkpoint holds the trained weights, so nothing is downloaded or read from the original weights file. What came
from the checkpoint is printed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from ..backbone.weights import WeightsDownloadError
from ..pictures.curves import TrainingCurves
from ..tasks.checkpointing import ResumableTraining, slurm_resume_checkpoint
from ..tasks.legacy import upgrade_hyperparameters

_CONFIG_OPTIONS = ("-c", "--config")


def nested_nulls(args: list[str]) -> list[str]:
    """``--model.init_args.optimization.reference_batch_size null`` -> ``--model.init_args.optimization
    '{"reference_batch_size": null}'``.

    jsonargparse (4.x) turns a dotted ``null`` for a field of a settings dataclass inside ``init_args`` into the
    string ``"None"`` and then rejects it; the same value given as a one-key dict for the block parses, merged into
    the block's other values. Every other option passes through unchanged.
    """
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        key, value, width = None, None, 1
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
        elif arg.startswith("--") and i + 1 < len(args):
            key, value, width = arg, args[i + 1], 2
        head, sep, tail = (key or "").partition(".init_args.")
        if value == "null" and sep and tail.count(".") >= 1:
            block, field = tail.rsplit(".", 1)
            out += [f"{head}.init_args.{block}", json.dumps({field: None})]
            i += width
        else:
            out.append(arg)
            i += 1
    return out


def split_config_files(args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` (after the subcommand) -> (the ``--config`` options, the options typed one by one)."""
    configs, typed, value_of_config = [], [], False
    for arg in args:
        if value_of_config:
            configs.append(arg)
            value_of_config = False
        elif arg in _CONFIG_OPTIONS:
            configs.append(arg)
            value_of_config = True
        elif arg.startswith(tuple(f"{option}=" for option in _CONFIG_OPTIONS)):
            configs.append(arg)
        else:
            typed.append(arg)
    return configs, typed


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` for Namespaces and dicts; other values (tuples as lists, nested ones
    too, so a value compares equal however it was read) are leaves."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: _lists(value)}


def _lists(value: Any) -> Any:
    """Tuples and lists as lists, at every depth (``((0.2, 1.0),)`` -> ``[[0.2, 1.0]]``)."""
    return [_lists(item) for item in value] if isinstance(value, (tuple, list)) else value


def checkpoint_hyperparameters(ckpt_path: str | Path) -> dict[str, Any]:
    """The model's hyper-parameters saved in a Lightning checkpoint, without Lightning's private keys; a checkpoint
    written before the settings blocks has its flat options read as today's blocks (:mod:`mobilenetv2_dense.tasks.
    legacy`)."""
    checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu")
    hparams = dict(checkpoint.get("hyper_parameters", {}))
    hparams.pop("_instantiator", None)
    return upgrade_hyperparameters(hparams, source=ckpt_path)


def json_default(value: Any) -> Any:
    """JSON for what Python-built tasks keep in their hyper-parameters (dataclasses such as ``Optimization``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"checkpoint hyper-parameter of type {type(value).__name__} cannot be given to the CLI: {value!r}")


def _cause(error: BaseException, kind: type[Exception]) -> Exception | None:
    """The first exception of type ``kind`` in ``error``'s chain of causes, or ``None``."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class TaskCLI(LightningCLI):
    """LightningCLI where ``--ckpt_path`` fills in the model's arguments the command line did not type, and
    ``model.init_args.num_classes`` comes from the data module.

    ``num_classes`` is linked (``link_arguments``, on instantiation) from ``data.num_classes``: the number of classes
    the dataset's annotations define (object categories for detection, background implicit; mask labels for
    segmentation, background included; class folders for classification). A value written in a config, typed, or
    restored from a checkpoint is kept, and the task checks it against the data at set-up (``BaseTask.setup``).
    See the module docstring for the ``--ckpt_path`` precedence; everything else is LightningCLI's.
    """

    _given_num_classes: int | None = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data", "model.init_args.num_classes", compute_fn=self._num_classes,
                              apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        init_args = config.get("model", {}).get("init_args") if isinstance(config.get("model"), Namespace) else None
        self._given_num_classes = init_args.get("num_classes") if init_args is not None else None

    def _num_classes(self, datamodule: L.LightningDataModule) -> int:
        """The model's ``num_classes``: the one given (config, command line, checkpoint), else the data's."""
        if self._given_num_classes is not None:
            return self._given_num_classes
        try:
            return datamodule.num_classes
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(
                f"model.init_args.num_classes comes from {type(datamodule).__name__}.num_classes, which could not "
                f"read the dataset's classes ({error}); put the dataset where data.init_args says, or give "
                "model.init_args.num_classes (a checkpoint given with --ckpt_path gives it too)") from error

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if not isinstance(args, (dict, Namespace)):
            args = nested_nulls(list(sys.argv[1:] if args is None else args))
        self._args = list(args) if not isinstance(args, (dict, Namespace)) else None
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        self._resume_slurm_job(subcommand)
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = checkpoint_hyperparameters(ckpt_path)
        configured = _flatten(self.config[subcommand].get("model"), "model.")
        if hparams:
            class_path = hparams.pop("_class_path", None) or configured.get("model.class_path")
            spec = {"class_path": class_path, "init_args": hparams} if class_path else hparams
            if self._args is None:  # parsed from a dict: there is no command line to put above the checkpoint
                self.config = self.parser.parse_object({subcommand: {"model": spec}}, self.config)
            else:
                # One parse, in precedence order: the config files, the checkpoint, then what was typed.
                at = self._args.index(subcommand)
                configs, typed = split_config_files(self._args[at + 1:])
                checkpoint = ["--model", json.dumps(spec, default=json_default)]
                self.config = self.parser.parse_args([*self._args[:at + 1], *configs, *checkpoint, *typed])
            self._report(ckpt_path, configured, _flatten(spec, "model."),
                         _flatten(self.config[subcommand].get("model"), "model."))
        model = self.config[subcommand].get("model")
        init_args = model.get("init_args") if isinstance(model, Namespace) else None
        backbone = init_args.get("backbone") if init_args is not None else None
        if backbone is not None and backbone.get("weights") is not None:
            # The checkpoint's state_dict replaces the backbone's start weights: never download or read them.
            rank_zero_info(f"model.init_args.backbone.weights={backbone.weights!r} is not loaded: "
                           f"{ckpt_path} holds the trained weights")
            backbone["weights"] = None
        qat = init_args.get("qat") if init_args is not None else None
        if qat is not None and qat.get("weights") is not None:
            # A QAT checkpoint holds the trained weights too: its float start checkpoint is not read again.
            qat["weights"] = None

    def _resume_slurm_job(self, subcommand: str) -> None:
        """In a SLURM job, a command without ``--ckpt_path`` gets the job's newest ``hpc_ckpt_<N>.ckpt`` as one
        (``tasks/checkpointing.py``): Lightning would load that file anyway, but into a model built from the config
        alone; given here, the model's arguments come from it as from any ``--ckpt_path``, and the log names it."""
        config = self.config[subcommand]
        if "ckpt_path" not in config or config.get("ckpt_path") is not None:
            return
        trainer = config.get("trainer")
        path = slurm_resume_checkpoint(trainer.get("default_root_dir") if trainer is not None else None)
        if path is None:
            return
        state = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        verb = "resumes from" if subcommand == "fit" else "loads"
        rank_zero_info(f"SLURM job {os.environ.get('SLURM_JOB_ID')}: {subcommand} {verb} {path} (epoch "
                       f"{state.get('epoch')}, step {state.get('global_step')}), the newest hpc_ckpt_<N>.ckpt in "
                       "trainer.default_root_dir (saved on the requeue signal or SIGTERM); to start afresh instead, "
                       "give another trainer.default_root_dir or remove those files")
        config["ckpt_path"] = str(path)
        if self._args is not None:  # parsed again below: as if typed
            self._args += ["--ckpt_path", str(path)]

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # jsonargparse wraps what a constructor raises in its own report
            cause = _cause(error, WeightsDownloadError)
            if cause is None:
                raise
            raise WeightsDownloadError(cause.name, cause.reason, option="model.init_args.backbone.weights",
                                       none="null") from None

    @staticmethod
    def _report(ckpt_path: str, configured: dict, checkpoint: dict, final: dict) -> None:
        """Print the model arguments the checkpoint set, and those the command line set over it."""
        lines = []
        for key, value in checkpoint.items():
            if key not in final:
                continue
            if final[key] != value:  # the checkpoint is applied over the config files: only the command line wins
                lines.append(f"  {key}: {final[key]!r} from the command line (checkpoint: {value!r})")
            elif configured.get(key) != value:
                lines.append(f"  {key}: {value!r} from the checkpoint (config: {configured.get(key)!r})")
        if lines:
            rank_zero_info(f"Model arguments set by --ckpt_path {ckpt_path} or typed over it (the command line wins "
                           "over the checkpoint, the checkpoint over the config files):\n" + "\n".join(lines))


def cli_main(args: list[str] | None = None, run: bool = True) -> TaskCLI:
    """Run the CLI on ``args`` (``sys.argv`` when ``None``); ``run=False`` only instantiates model and data.

    Behind ``mobilenetv2-dense``, ``python -m mobilenetv2_dense`` (``mobilenetv2_dense/__main__.py``) and
    ``python train_task.py``.
    With ``run=False`` the arguments have no subcommand: ``cli_main(["--config", path], run=False)``.
    """
    return TaskCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        # Appended to the callbacks a config lists (LightningCLI adds trainer_defaults' callbacks, never replaces):
        # checkpoint on SIGTERM, atomic writes, RNG states; training_curves.png when fit ends.
        trainer_defaults={"callbacks": [ResumableTraining(), TrainingCurves()]},
    )
