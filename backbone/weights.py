"""Loading torchvision ``mobilenet_v2`` weights into :class:`backbone.MobileNetV2`.

torchvision names its layers ``features.{i}.conv.{j}``; this project names them after the paper
(``stem``, ``stages.{s}.{b}.expand|depthwise|project``, ``conv_head``). The mapping is computed from Table 2.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .mobilenetv2 import INVERTED_RESIDUAL_SETTING, STEM_CHANNELS, MobileNetV2, make_divisible

TORCHVISION_WEIGHT_NAMES = ("IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT")
_COUNTER = ".num_batches_tracked"  # BatchNorm's batch counter: a buffer other norm layers do not have


class WeightsDownloadError(RuntimeError):
    """torchvision's weights ``name`` could not be downloaded (no internet, a proxy, a server error).

    ``option`` names the setting that asked for them (``weights`` of :func:`mobilenetv2_dense.backbone.mobilenet_v2`,
    or a config key),
    ``none`` how that setting spells "no weights".
    """

    def __init__(self, name: str, reason: object, *, option: str = "weights", none: str = "None") -> None:
        self.name, self.reason = name, reason
        super().__init__(
            f"{option}={name!r}: could not download torchvision's mobilenet_v2 weights {name!r} ({reason}). Without "
            f"internet, set {option} to a local .pth file holding a torchvision mobilenet_v2 state_dict "
            f"(torch.save(model.state_dict(), path) on a machine that has the weights), or to {none} to start from "
            "random weights")


def _torchvision_key_map() -> dict[str, str]:
    """Prefix map: torchvision module path -> this project's module path."""
    mapping = {"features.0.": "stem."}
    index = 1
    for stage, (t, _, n, _) in enumerate(INVERTED_RESIDUAL_SETTING):
        for block in range(n):
            ours = f"stages.{stage}.{block}."
            parts = ["expand.", "depthwise.", "project.0.", "project.1."] if t != 1 else [
                "depthwise.", "project.0.", "project.1."]
            for j, part in enumerate(parts):
                mapping[f"features.{index}.conv.{j}."] = ours + part
            index += 1
    mapping[f"features.{index}."] = "conv_head."
    mapping["classifier.1."] = "classifier.1."
    return mapping


_KEY_MAP = _torchvision_key_map()
_PREFIX = re.compile(r"^(features\.\d+\.(?:conv\.\d+\.)?|classifier\.1\.)")


def convert_torchvision_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename torchvision keys to ours. Returns ``(converted, keys that are not torchvision mobilenet_v2's)``."""
    converted, foreign = {}, []
    for key, value in state_dict.items():
        match = _PREFIX.match(key)
        prefix = match.group(1) if match else None
        if prefix in _KEY_MAP:
            converted[_KEY_MAP[prefix] + key[len(prefix):]] = value
        elif key.split(".")[0] in {"stem", "stages", "conv_head", "classifier"}:
            converted[key] = value  # already in this project's naming
        else:
            foreign.append(key)
    return converted, foreign


def download_torchvision_weights(name: str) -> dict[str, torch.Tensor]:
    """torchvision's ``mobilenet_v2`` state_dict ``name`` (downloaded once into the torch hub cache)."""
    from torchvision.models import MobileNet_V2_Weights

    try:
        return MobileNet_V2_Weights[name].get_state_dict(progress=True)
    except OSError as error:  # URLError, HTTPError, socket errors: all say the file could not be fetched
        raise WeightsDownloadError(name, getattr(error, "reason", error)) from error


def _read(weights: str | Path) -> dict[str, torch.Tensor]:
    if str(weights) in TORCHVISION_WEIGHT_NAMES:
        return download_torchvision_weights(str(weights))
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {str(path)!r} does not exist; pass the path of a torchvision mobilenet_v2 state_dict "
            f"(torch.save(model.state_dict(), path)) or one of {TORCHVISION_WEIGHT_NAMES} to download ImageNet weights"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file and the fix
        raise ValueError(
            f"could not read weights file {str(path)!r} ({error}); it must be a state_dict saved with torch.save"
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a Lightning or mmcv checkpoint
    if not isinstance(state, dict):
        raise ValueError(f"weights file {str(path)!r} holds a {type(state).__name__}, not a state_dict")
    return state


def _width_hint(state: dict[str, torch.Tensor], width_mult: float) -> str:
    """Which widths the file's stem and last-stage channel counts fit, when they do not fit the model's."""
    probes = {"stem.0.weight": STEM_CHANNELS, "stages.6.0.project.0.weight": INVERTED_RESIDUAL_SETTING[-1][1]}
    widths = [w for w in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
              if all(make_divisible(base * w) == state[key].shape[0] for key, base in probes.items() if key in state)]
    if not any(key in state for key in probes) or width_mult in widths:
        return ""
    return f" The file looks saved at width_mult in {widths}, the model has {width_mult}."


def load_weights(model: MobileNetV2, weights: str | Path) -> None:
    """Load ``weights`` into ``model``, or raise naming every missing, unexpected and mis-shaped key.

    Keys of layers that ``model`` does not build (past its last ``out_features``) are skipped, and so is a
    classifier of another class count (fine-tuning on a new label set). BatchNorm's ``num_batches_tracked``
    counters are skipped where the model's norm layer has none (``torchvision.ops.FrozenBatchNorm2d``), so
    torchvision's weights load into the frozen norm layer its detectors use.
    """
    if str(weights) in TORCHVISION_WEIGHT_NAMES and model.width_mult != 1.0:
        raise ValueError(f"torchvision's {weights} weights are for width_mult=1.0, not {model.width_mult}; "
                         "pass a local state_dict file saved at that width instead")
    state, foreign = convert_torchvision_state_dict(_read(weights))
    ours = model.state_dict()
    built_roots = {key.split(".")[0] for key in ours}
    stage_count = len(model.stages)

    def is_built(key: str) -> bool:
        root = key.split(".")[0]
        if root == "stages":
            return int(key.split(".")[1]) < stage_count
        return root in built_roots

    # Only BatchNorm keeps a batch counter: a norm layer without one (torchvision's FrozenBatchNorm2d, as its
    # detectors use) takes BatchNorm weights without it, and a BatchNorm missing it from the file keeps its own.
    loadable = {k: v for k, v in state.items() if is_built(k) and (k in ours or not k.endswith(_COUNTER))}
    if model.classifier is not None and "classifier.1.weight" in loadable:
        if loadable["classifier.1.weight"].shape != ours["classifier.1.weight"].shape:
            loadable.pop("classifier.1.weight"), loadable.pop("classifier.1.bias", None)
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(ours[k].shape)}"
                  for k, v in loadable.items() if k in ours and v.shape != ours[k].shape]
    missing = [k for k in ours if k not in loadable and not k.startswith("classifier.") and not k.endswith(_COUNTER)]
    unexpected = foreign + [k for k in loadable if k not in ours]
    if mismatched or missing or unexpected:
        hint = _width_hint(state, model.width_mult)
        raise ValueError(
            f"weights {str(weights)!r} do not fit MobileNetV2(width_mult={model.width_mult}): "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(mismatched)} shape mismatches {mismatched[:5]}.{hint} "
            "Pass a torchvision mobilenet_v2 state_dict saved at the same width."
        )
    model.load_state_dict(loadable, strict=False)
