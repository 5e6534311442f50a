"""Loading this project's checkpoints into the floor's models, without Lightning.

Two kinds of file hold a model's weights:

==============================  ==============================================================================
file                            the network's keys
==============================  ==============================================================================
Lightning checkpoint of a task  ``checkpoint["state_dict"]``: ``model.backbone...``, ``model.head...`` (the task
                                wraps the network as ``self.model``; its loss and metrics keys are left out)
plain state_dict file           ``backbone...``, ``head...`` (``torch.save(model.state_dict(), path)``)
==============================  ==============================================================================

Both are read with ``torch.load(weights_only=True)``. A Lightning checkpoint also pickles the task's
hyper-parameters, where a task built in Python keeps dataclasses (``Optimization``) that ``tasks/`` allowlists for
``weights_only``; without ``tasks`` imported those classes are unknown. The file is then read again with an inert
stand-in for each of them (built, never called into), so the weights load and no code from the file runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

PREFIX = "model."


class _StandIn:
    """Takes the place of a class a checkpoint names but ``weights_only`` does not know: accepts any
    construction and state, keeps nothing. Only the checkpoint's ``state_dict`` is read afterwards."""

    def __new__(cls, *args: object, **kwargs: object) -> _StandIn:
        return super().__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


def _load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for unknown classes; KeyError, RuntimeError, ... for other files
        first = error
    try:
        unknown = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:
        raise ValueError(f"load_checkpoint_weights: {str(path)!r} is not a torch.save file "
                         f"({type(first).__name__} from torch.load); pass a Lightning .ckpt of this project's tasks "
                         "or a file written by torch.save(model.state_dict(), path)") from first
    if not unknown:
        raise _unreadable(path, unknown) from first
    # One stand-in class per unknown name: the allowlist maps each full name to its own class.
    stand_ins = [(type(name.rpartition(".")[2], (_StandIn,), {}), name) for name in unknown]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as second:
        raise _unreadable(path, unknown) from second


def _unreadable(path: Path, unknown: list[str]) -> ValueError:
    return ValueError(
        f"load_checkpoint_weights: {str(path)!r} cannot be read with torch.load(weights_only=True), even with inert "
        f"stand-ins for the classes it names ({unknown}); save the weights alone with "
        "torch.save(model.state_dict(), path) (for a task: task.model.state_dict()), or import the module that "
        "registers the file's classes with torch.serialization.add_safe_globals first")


def checkpoint_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The network's state_dict from a Lightning checkpoint of a task (keys ``model.*``, prefix stripped) or from
    a plain state_dict file (keys as they are)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint_state_dict: weights file {str(path)!r} not found; pass the path of a "
                                "Lightning .ckpt of this project's tasks or of a torch.save(model.state_dict()) file")
    loaded = _load(path)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ValueError(f"checkpoint_state_dict: {str(path)!r} holds neither a Lightning checkpoint nor a state_dict "
                         f"(got {type(loaded).__name__}); save one with torch.save(model.state_dict(), path)")
    if any(key.startswith(PREFIX) for key in loaded):
        # A task's checkpoint: the network is ``task.model``; the task's own modules (loss, metrics) are not ours.
        return {key[len(PREFIX):]: value for key, value in loaded.items() if key.startswith(PREFIX)}
    return dict(loaded)


def load_checkpoint_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load every weight of ``model`` from ``path`` (see :func:`checkpoint_state_dict`); returns ``model``.

    The keys must match exactly: a model built with other arguments than the checkpoint's (``num_classes``,
    ``width_mult``, ``head``, ``decoder``, ...) raises, naming the keys that differ.
    """
    state = checkpoint_state_dict(path)
    ours = model.state_dict()
    missing = [key for key in ours if key not in state]
    unexpected = [key for key in state if key not in ours]
    mismatched = [f"{key}: file {tuple(value.shape)} vs model {tuple(ours[key].shape)}"
                  for key, value in state.items() if key in ours and value.shape != ours[key].shape]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"load_checkpoint_weights: {str(path)!r} does not fit this {type(model).__name__}: {len(missing)} missing "
            f"keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, {len(mismatched)} shape "
            f"mismatches {mismatched[:5]}; build the model with the arguments the checkpoint was trained with "
            "(num_classes, width_mult, head, decoder: the task's hyper-parameters)")
    model.load_state_dict(state)
    return model
