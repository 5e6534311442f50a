"""Running an exported file: ONNX Runtime for ``.onnx``, ExecuTorch's Python runtime for ``.pte``, the LiteRT
interpreter for ``.tflite`` (:class:`~mobilenetv2_dense.deploy.litert.LiteRTDeployedModel`, optional).

:class:`DeployedModel` reads the file and its JSON sidecar (``<file>.json``, written by the export command) and
gives the graph's named outputs as tensors, so parity checks, ``validate`` and ``predict`` treat both runtimes alike.
Neither Lightning nor the PyTorch network is needed to run one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def sidecar_path(path: str | Path) -> Path:
    """The JSON that describes an exported file: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``meta`` as ``path``'s sidecar; :class:`DeployedModel` needs at least ``task``, ``outputs`` (names in
    output order) and ``classes`` (the export command writes the full contract)."""
    json_path = sidecar_path(path)
    json_path.write_text(json.dumps(meta, indent=2))
    return json_path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The export's description of ``path`` (task, input, outputs, classes, versions, parity)."""
    json_path = sidecar_path(path)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path} is missing: an exported model is read with the JSON the export command "
                                f"writes beside it (class names and ids, outputs); export {path} again with "
                                "python export.py --config ... --format onnx|executorch --output ...")
    return json.loads(json_path.read_text())


class DeployedModel:
    """An exported detector, segmenter, joint detector + segmenter or classifier, run by its runtime on the CPU.

    ``model(images (N, 3, H, W) float32 RGB in [0, 1]) -> {output name: tensor}`` with the names and shapes of the
    contract (docs/export.md): detection ``boxes``, ``scores``, ``labels`` (category ids), ``num_detections``;
    segmentation ``logits`` or ``labels``; joint the detection outputs and ``seg_logits`` or ``seg_labels``;
    classification ``logits``.

    Args:
        path: a ``.onnx``, ``.pte`` or ``.tflite`` file written by ``python export.py``, its ``.json`` beside it;
            ``DeployedModel(path)`` of a ``.tflite`` is a
            :class:`~mobilenetv2_dense.deploy.litert.LiteRTDeployedModel` (which needs ``pip install -e .[litert]``).
        threads: intra-op threads of ONNX Runtime, the size of ExecuTorch's process-wide XNNPACK thread pool, or the
            LiteRT interpreter's threads (``None``: the runtime's default).
    """

    def __new__(cls, path: str | Path | None = None, *args: Any, **kwargs: Any) -> DeployedModel:
        # The runtime follows the suffix: a .tflite is LiteRT's class (deploy/litert.py, importing ai-edge-litert
        # only when a file is opened), so every caller opens any format the export command writes alike.
        if cls is DeployedModel and path is not None and Path(path).suffix.lower() == ".tflite":
            from .litert import LiteRTDeployedModel

            return super().__new__(LiteRTDeployedModel)
        return super().__new__(cls)

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"deployed model {self.path} does not exist; write it with python export.py")
        self.meta = read_sidecar(self.path)
        self.task: str = self.meta["task"]
        self.output_names: list[str] = [output["name"] for output in self.meta["outputs"]]
        self._to_label: Tensor | None = None
        suffix = self.path.suffix.lower()
        if suffix == ".onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads is not None:
                options.intra_op_num_threads = threads
            options.log_severity_level = 3  # no constant-folding notes on every load
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self.runtime = f"onnxruntime {ort.__version__}"
        elif suffix == ".pte":
            from executorch.runtime import Runtime

            if threads is not None:  # XNNPACK's thread pool is process-wide; its default is every core
                from executorch.extension.pybindings._C import _unsafe_reset_threadpool

                _unsafe_reset_threadpool(threads)
            self._method = Runtime.get().load_program(self.path).load_method("forward")
            # ExecuTorch plans memory for the largest input a program takes: export.py writes static programs,
            # (1, 3, H, W), so batches run image by image; a file of an older version may have a dynamic batch
            # (and H, W), planned for their upper bounds as its memory planner resolved them (e.g. 15 images).
            self.max_input_size = tuple(self._method.metadata.input_tensor_meta(0).sizes())
            self.runtime = "executorch"
        else:
            raise ValueError(f"{self.path}: a deployed model is a .onnx (ONNX Runtime), .pte (ExecuTorch) or .tflite "
                             "(LiteRT) file")

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.path.name}: expected images (N, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        images = images.detach().to("cpu", torch.float32).contiguous()
        if hasattr(self, "_session"):
            outputs = [torch.from_numpy(np.asarray(o)) for o in self._session.run(None, {"images": images.numpy()})]
            return dict(zip(self.output_names, outputs))
        if self.fixed_size is not None and tuple(images.shape[-2:]) != self.fixed_size:
            raise ValueError(f"{self.path.name}: the ExecuTorch file takes images of {self.fixed_size}, got "
                             f"{tuple(images.shape[-2:])}; resize them, or export at their size with --image_size H W "
                             "(an ONNX file of a segmenter or classifier takes any H and W)")
        if images[0].numel() > int(np.prod(self.max_input_size[1:])):
            raise ValueError(f"{self.path.name}: an image of {tuple(images.shape[1:])} is larger than the ExecuTorch "
                             f"program was planned for ({self.max_input_size[1:]}); export with a larger --image_size")
        # Batches past the planned bound in parts. ExecuTorch's Python binding returns new tensors (not views of the
        # program's planned memory, which the next run reuses): no copy is needed (tests/deploy/test_lowering.py).
        chunks = [list(self._method.execute([part])) for part in images.split(self.max_input_size[0])]
        if len(chunks) == 1:  # one image: its outputs as they are
            return dict(zip(self.output_names, chunks[0]))
        return {name: torch.cat([chunk[i] for chunk in chunks]) for i, name in enumerate(self.output_names)}

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """``(H, W)`` the file takes only (a detector's or joint model's: its anchors are constants of the size; any
        ExecuTorch file's: it is static), or ``None`` when H and W are dynamic."""
        if self.meta.get("dynamic_size", True):
            return None
        height, width = self.meta["input"]["image_size"]
        return int(height), int(width)

    # ------------------------------------------------------------------------------------ the label set
    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.meta["classes"]]

    @property
    def category_ids(self) -> list[int]:
        """Detection: the dataset's category id of labels 1..K (what ``labels`` holds)."""
        return [int(c["id"]) for c in self.meta["classes"]]

    def detections(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detection outputs as the eager ``SSDLite.predict`` gives them: per image ``boxes (D, 4)``, ``scores``,
        ``labels`` in 1..K (category ids mapped back), only the ``num_detections`` filled rows."""
        return self.detections_from(self(images))

    def detections_from(self, out: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """:meth:`detections` from outputs already computed (a joint model's, whose segmentation is wanted too)."""
        if self._to_label is None:  # category id -> label 1..K, built once per file
            self._to_label = torch.zeros(max(self.category_ids) + 1, dtype=torch.int64)
            self._to_label[torch.tensor(self.category_ids)] = torch.arange(1, len(self.category_ids) + 1)
        to_label = self._to_label
        return [{"boxes": boxes[:n], "scores": scores[:n], "labels": to_label[labels[:n]]}
                for boxes, scores, labels, n in zip(out["boxes"], out["scores"], out["labels"],
                                                    out["num_detections"].tolist())]
