"""LiteRT (TensorFlow Lite) ``.tflite``: a deployed graph (``deploy/graph.py``) converted by litert-torch, float or
int8 (:func:`write_litert`), and run in the LiteRT interpreter (:class:`LiteRTDeployedModel`).

The file keeps the ONNX and ExecuTorch files' contract (docs/export.md): one input ``images`` RGB in ``[0, 1]``, NCHW
(the converter moves the convolutions to NHWC inside), normalisation and post-processing in the graph, the outputs
named and typed as in the sidecar (``labels`` and ``num_detections`` int64). What differs:

- every dimension is static, ``(1, 3, H, W)`` at the export's size: litert-torch lowers most ops through JAX, which
  takes no symbolic dimension, so a segmenter's or classifier's H and W are fixed too (:func:`static_contract`);
  :class:`LiteRTDeployedModel` runs a batch image by image and refuses another size;
- DeepLabv3's image pooling broadcasts its ``(N, C, 1, 1)`` map by a nearest-neighbour resize, not ``expand``
  (:func:`convertible`): the same values, but litert-torch 0.10 lowers that ``expand``, once its layout pass has
  made the convolutions around it NHWC, to a ``BROADCAST_TO`` of an NCHW input to an NHWC shape, which the
  interpreter refuses ("Output shape must be broadcastable from input shape");
- in an int8 file, a float output that is the network's own (a segmenter's or classifier's logits) stays int8, with
  its scale and zero point in the file; :class:`LiteRTDeployedModel` gives it back as float32.

int8 quantises the network alone, as ``deploy/quantize.py`` does for ExecuTorch: PT2E with litert-torch's quantiser
(symmetric int8, per-channel weights, histogram-calibrated activations), lowered by the converter's static Q/DQ
mode; the normalisation and the post-processing stay float.

litert-torch is optional (``pip install -e .[litert]``: litert-torch and the interpreter, ai-edge-litert, at the
versions pyproject.toml pins); it is imported only when a file is written or run, and :func:`require_litert` says
what to install where it is missing.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..heads.deeplab import ImagePooling
from .runtime import DeployedModel, read_sidecar

SUFFIX = ".tflite"
Observer = Literal["minmax", "histogram"]
OBSERVER: Observer = "minmax"
INSTALL = "pip install -e .[litert]"  # pyproject.toml's extra: litert-torch, ai-edge-litert and their pins


def _missing(package: str, error: ImportError | None = None) -> ImportError:
    found = f"importing it failed with: {error}" if error is not None else "not installed"
    return ImportError(f"LiteRT (.tflite) needs {package} ({found}): install the optional dependencies with {INSTALL} "
                       "in the repository (litert-torch and ai-edge-litert at the versions pyproject.toml pins)")


def require_litert() -> None:
    """Raise :class:`ImportError` naming ``pip install -e .[litert]`` unless litert-torch and ai-edge-litert are
    importable: the export command asks before it builds anything, so a missing converter fails at once."""
    missing = [name for name in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(name) is None]
    if missing:
        raise _missing(" and ".join(name.replace("_", "-") for name in missing))


class _BroadcastPooling(ImagePooling):
    """:class:`ImagePooling` whose ``(N, C, 1, 1) -> (N, C, H, W)`` broadcast is a nearest-neighbour resize: the
    same values, in an op litert-torch lowers correctly (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        conv, norm, act = self.conv
        y = act(norm(conv(F.adaptive_avg_pool2d(x, 1))))  # eval only: the graph is never trained
        return F.interpolate(y, size=x.shape[-2:], mode="nearest")  # (N, C_out, 1, 1) -> (N, C_out, H, W)


class _Named(nn.Module):
    """The graph with its outputs as a dict: the converter names the file's outputs after its keys."""

    def __init__(self, graph: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        # not ``self.graph``: torch.export's unlifted GraphModule has a ``graph`` attribute of its own
        self.deployed, self.names = graph, list(names)
        self.training = False  # the graph is in eval mode already (an int8 network refuses .eval(): set, not called)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        outputs = self.deployed(images)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return dict(zip(self.names, outputs, strict=True))


def convertible(graph: nn.Module) -> nn.Module:
    """A copy of ``graph`` in eval mode whose DeepLabv3 image pooling broadcasts by resizing (module docstring)."""
    graph = copy.deepcopy(graph).eval()
    for module in graph.modules():
        if type(module) is ImagePooling:
            module.__class__ = _BroadcastPooling
    return graph


def quantize_litert(graph: nn.Module, example: Tensor, calibration: Iterable[Tensor], *,
                    observer: Observer = OBSERVER) -> tuple[nn.Module, object]:
    """``graph`` (from :func:`convertible`) with its ``network`` int8 by PT2E for the LiteRT converter, and the
    quantiser the converter needs to lower the Q/DQ pairs. ``calibration``: ``[0, 1]`` batches (the graph's input);
    ``observer``: how activation ranges are calibrated, ``"minmax"`` (as ONNX Runtime's int8 here)
    or ``"histogram"`` (litert-torch's default: clips outliers by an error search per tensor, far slower)."""
    try:
        from litert_torch.quantize.pt2e_quantizer import (  # pyright: ignore[reportMissingImports] (optional)
            PT2EQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.observer import MinMaxObserver
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as error:
        raise _missing("litert-torch", error) from error

    config = get_symmetric_quantization_config(is_per_channel=True)
    if observer == "minmax":
        activation = dataclasses.replace(config.input_activation,
                                         observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=activation, output_activation=activation)
    elif observer != "histogram":
        raise ValueError(f"quantize_litert: observer must be 'minmax' or 'histogram', got {observer!r}")
    graph = copy.deepcopy(graph).eval()
    quantizer = PT2EQuantizer().set_global(config)
    with torch.no_grad():
        # strict (TorchDynamo) capture: the quantiser finds cat, add and mul by the source_fn_stack metadata only it
        # records; without it the head's concatenations stay float and the converter gives them the first level's
        # scale, clipping every other level's boxes and scores
        module = torch.export.export(graph.network, (graph.normalize(example[:1]),), strict=True).module()
        prepared = prepare_pt2e(module, quantizer)
        for batch in calibration:
            for image in batch.split(1):  # the network is exported, as the file is, for one image
                prepared(graph.normalize(image))
    graph.network = convert_pt2e(prepared, fold_quantize=False)  # the converter folds the weights' Q/DQ itself
    return graph, quantizer


def write_litert(graph: nn.Module, example: Tensor, path: str | Path, *, output_names: Sequence[str],
                 int8: bool = False, calibration: Iterable[Tensor] | None = None,
                 observer: Observer = OBSERVER) -> tuple[Path, float]:
    """Convert ``graph`` at ``example``'s image size to ``path`` (``.tflite``, input ``(1, 3, H, W)``); returns the
    file and the seconds it took.

    Args:
        graph: a deployed graph of ``deploy/graph.py`` (not changed: the converter works on a copy).
        example: ``(N, 3, H, W)`` in ``[0, 1]`` at the export's size; its first image is traced.
        output_names: the contract's output names, in output order (the file's signature names them).
        int8: quantise the network (PT2E, :func:`quantize_litert`) on ``calibration`` batches first.
        calibration: ``(n, 3, H, W)`` batches in ``[0, 1]`` at the same size, typically training images.
        observer: the activation ranges' calibration (:func:`quantize_litert`).
    """
    try:
        import litert_torch  # pyright: ignore[reportMissingImports] (an optional dependency)
        from litert_torch.quantize.quant_config import QuantConfig  # pyright: ignore[reportMissingImports]
    except ImportError as error:
        raise _missing("litert-torch", error) from error
    if int8 and calibration is None:
        raise ValueError("write_litert: int8=True needs calibration batches ([0, 1] images at the export's size)")
    path = Path(path)
    if path.suffix != SUFFIX:
        raise ValueError(f"write_litert: {path} should end in {SUFFIX}, the suffix LiteRT runtimes expect")
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example[:1]
    start = time.perf_counter()
    module, quant_config = convertible(graph), None
    if int8:
        module, quantizer = quantize_litert(module, example, calibration, observer=observer)
        quant_config = QuantConfig(pt2e_quantizer=quantizer)
    with torch.no_grad():
        # enable_x64: int64 outputs stay int64 (by default the converter narrows them to int32)
        converted = litert_torch.convert(_Named(module, output_names), sample_kwargs={"images": example},
                                         quant_config=quant_config, enable_x64=True)
    converted.export(str(path))
    return path, time.perf_counter() - start


def static_contract(contract: dict[str, Any]) -> dict[str, Any]:
    """A graph's sidecar contract (``export.py``'s, ``input`` included) as a LiteRT file has it: ``(1, 3, H, W)`` at
    the export's ``input.image_size``, since litert-torch converts no dynamic dimension (a segmenter's or
    classifier's H and W are dynamic in ONNX and ExecuTorch)."""
    height, width = contract["input"]["image_size"]
    image = {key: value for key, value in contract["input"].items() if key != "size_range"}
    return {**contract, "dynamic_size": False, "input": {**image, "shape": [1, 3, height, width]}}


def litert_versions() -> dict[str, str]:
    """The converter's and the runtime's versions, for the sidecar's ``versions``."""
    from importlib.metadata import version

    return {"litert_torch": version("litert-torch"), "ai_edge_litert": version("ai-edge-litert")}


def count_int8_weights(path: str | Path) -> int:
    """Per-channel int8 weight tensors of a ``.tflite``: one per int8 convolution / fully connected layer (the
    sidecar's ``int8_layers``, as :func:`~mobilenetv2_dense.deploy.quantize.count_onnx_int8_layers` for ONNX)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # pyright: ignore[reportMissingImports] (optional)
    except ImportError as error:
        raise _missing("ai-edge-litert", error) from error
    tensors = Interpreter(model_path=str(path)).get_tensor_details()
    return sum(1 for t in tensors if t["dtype"] == np.int8 and len(t["shape"]) in (2, 4)
               and len(t["quantization_parameters"]["scales"]) > 1)


class LiteRTDeployedModel(DeployedModel):
    """A ``.tflite`` written by :func:`write_litert`, run by the LiteRT interpreter (XNNPACK on the CPU), with its
    sidecar: :class:`~mobilenetv2_dense.deploy.runtime.DeployedModel`'s interface (outputs by name as tensors,
    integer outputs ``int64``, detections with labels 1..K), so parity checks treat it as the other formats.

    Args:
        path: the ``.tflite`` file, its ``.json`` sidecar beside it.
        threads: the interpreter's threads (``None``: LiteRT's default).
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter  # pyright: ignore[reportMissingImports] (optional)
        except ImportError as error:
            raise _missing("ai-edge-litert", error) from error
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"deployed model {self.path} does not exist; write it with write_litert")
        self.meta = read_sidecar(self.path)
        self.task: str = self.meta["task"]
        self.output_names: list[str] = [output["name"] for output in self.meta["outputs"]]
        self._to_label: Tensor | None = None
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self._runner = self._interpreter.get_signature_runner()
        details = self._runner.get_output_details()
        missing = set(self.output_names) - set(details)
        if missing:
            raise ValueError(f"{self.path.name}: the sidecar names outputs {sorted(missing)} the file does not have "
                             f"({sorted(details)}); write both again with write_litert")
        # The contract's dtypes (a sidecar without them: int64 for integers); a float output the converter left
        # quantised (an int8 network's last layer) is (q - zero_point) * scale.
        self._dtypes = {o["name"]: getattr(torch, o["dtype"]) if "dtype" in o else
                        torch.int64 if np.issubdtype(details[o["name"]]["dtype"], np.integer) else torch.float32
                        for o in self.meta["outputs"]}
        self._quantised = {name: details[name]["quantization"] for name, dtype in self._dtypes.items()
                           if dtype.is_floating_point and np.issubdtype(details[name]["dtype"], np.integer)}
        # LiteRT files are static: (1, 3, H, W) at the export's size (litert-torch converts no dynamic dimension).
        self.input_shape = tuple(int(d) for d in self._runner.get_input_details()["images"]["shape"])
        self.runtime = "litert"

    @property
    def fixed_size(self) -> tuple[int, int]:
        """``(H, W)`` the file takes: every LiteRT file has a fixed input size."""
        return self.input_shape[2], self.input_shape[3]

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4 or tuple(images.shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"{self.path.name}: expected images (N, {', '.join(map(str, self.input_shape[1:]))}) RGB "
                             f"in [0, 1], got {tuple(images.shape)}; a LiteRT file takes the size it was exported at "
                             "(resize the images, or export at their size with --image_size H W)")
        images = images.detach().to("cpu", torch.float32).contiguous()
        chunks = [self._runner(images=part.numpy()) for part in images.split(self.input_shape[0])]
        outputs = {}
        for name, dtype in self._dtypes.items():
            value = np.concatenate([chunk[name] for chunk in chunks])
            if name in self._quantised:
                scale, zero_point = self._quantised[name]
                value = (value.astype(np.float32) - zero_point) * scale
            outputs[name] = torch.from_numpy(value).to(dtype)
        return outputs
