"""Quantisation-aware training with PT2E: the network with fake quantisation in its forward, trained like the float
one, then converted to the int8 network that the export command writes (ExecuTorch ``.pte`` and QDQ ONNX).

PT2E's QAT flow (``torch.export`` -> ``prepare_qat_pt2e`` with XNNPACK's quantiser -> train -> ``convert_pt2e``) runs
on :class:`~mobilenetv2_dense.deploy.graph.Network`, the tensors-in, tensors-out part of a model that int8 PTQ
(:func:`~mobilenetv2_dense.deploy.quantize.quantize_pt2e`) quantises too, with the same scheme: symmetric int8,
per-channel weights, every op XNNPACK quantises. The prepared graph keeps the model's own parameters and BatchNorm
buffers (``torch.export`` registers the same tensors), so training it trains ``model``: a QAT checkpoint holds the
float weights under the usual keys, plus the fake quantisers' state (activation ranges, per-channel weight scales).
Conv + BatchNorm pairs are trained folded (the quantiser simulates the folded int8 weights) and folded at
conversion; normalisation and the detector's post-processing stay float, as in PTQ.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..models.deeplab import DeepLabV3
from ..models.joint import SSDLiteDeepLabV3
from ..models.ssdlite import SSDLite
from .formats import MIN_SIZE, dynamic_shapes
from .graph import Network

# The BatchNorm eps of torchao's QAT patterns (qat_utils' "TODO: allow setting eps").
TORCHAO_BATCHNORM_EPS = 1e-5


@contextmanager
def conv2d_patterns_only() -> Iterator[None]:
    """torchao's Conv + BatchNorm passes of ``prepare_qat_pt2e`` and ``convert_pt2e`` try the patterns of four
    convolution kinds (1-D, 2-D and both transposed), each exported as about 30 small graphs: most of those calls'
    time. These networks have 2-D convolutions only, so within this context the passes try those alone (torchao
    0.18's private ``qat_utils`` helpers; if they are not there, nothing is changed and the passes run in full)."""
    from torch.nn import functional as F
    from torchao.quantization.pt2e import qat_utils

    names = ("_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper")
    originals = {name: getattr(qat_utils, name, None) for name in names}
    if any(helper is None for helper in originals.values()):
        yield
        return

    def only_conv2d(helper):
        def run(m, conv_fn, *args, **kwargs):
            return helper(m, conv_fn, *args, **kwargs) if conv_fn is F.conv2d else m
        return run

    for name, helper in originals.items():
        setattr(qat_utils, name, only_conv2d(helper))
    try:
        yield
    finally:
        for name, helper in originals.items():
            setattr(qat_utils, name, helper)


def qat_quantizer():
    """XNNPACK's quantiser for QAT: symmetric int8, per-channel weights (the PTQ scheme, with fake quantisers)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


class FakeQuantizedNetwork(nn.Module):
    """``model``'s forward through its PT2E fake-quantised network: what QAT trains and validates.

    ``forward(images (N, 3, H, W) normalised)`` returns ``model(images)``'s dict (``bbox_regression``, ``cls_logits``,
    ``anchors``; ``out``; ``logits``), each tensor computed with int8-rounded weights and activations and
    straight-through gradients. ``train()`` / ``eval()`` switch the graph's BatchNorms and dropout (the ``training``
    arguments of its ``batch_norm`` and ``dropout`` ops: torchao's ``move_exported_model_to_eval`` would rewrite each
    BatchNorm with the default eps and momentum).

    Args:
        model: a detector, segmenter, joint model or classifier (``model.train()`` mode is the one traced).
        image_size: ``(H, W)`` of the traced example: the only size of a detector's graph (its outputs' anchor
            count is one size's), in the dynamic range of a segmenter's or classifier's.
        dynamic_size: H and W dynamic (segmentation, classification), in ``[min_size, 2048]``.
        min_size: the smallest dynamic H, W.

    Only ``prepared`` is a submodule: ``model`` is not registered, so a task's ``state_dict`` keeps the model's
    weights under its own keys (``prepared`` shares them; its own state is the fake quantisers' and
    ``ranges_calibrated``, set by :meth:`calibrate`).
    """

    def __init__(self, model: nn.Module, image_size: Sequence[int], *, dynamic_size: bool,
                 min_size: int = MIN_SIZE) -> None:
        super().__init__()
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        object.__setattr__(self, "model", model)
        self.image_size = tuple(int(s) for s in image_size)
        self.dynamic_size = dynamic_size
        probe = next(model.parameters())
        # Batch 2: an example of 1 would specialise the batch dimension (a training batch's last may be smaller).
        example = torch.randn(2, 3, *self.image_size, device=probe.device)
        training = model.training
        model.train()  # the traced BatchNorms compute batch statistics; ``eval()`` switches them after
        program = torch.export.export(Network(model), (example,),
                                      dynamic_shapes=dynamic_shapes(dynamic_size, min_size=min_size))
        with conv2d_patterns_only():
            self.prepared = prepare_qat_pt2e(program.module(), qat_quantizer())
        _batchnorm_arguments_from(model, self.prepared)
        # train() / eval() set the flags alone (an exported module refuses them); _graph_mode switches the ops.
        self.prepared.train = types.MethodType(_flags_only_train, self.prepared)
        self.frozen_batchnorm = self.frozen_observers = False
        # Saved with the quantisers: a resumed run keeps calibrated ranges fixed and does not calibrate again.
        self.register_buffer("ranges_calibrated", torch.tensor(False))
        self.graph_training = True  # what the graph computes (the traced BatchNorms use batch statistics)
        self.train(training)
        model.train(training)
        if isinstance(model, SSDLite):  # the anchors of this size, as the eager model computes them
            anchors = model.anchors(self.image_size, model.feature_sizes(self.image_size), device=probe.device)
            self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        if not self.dynamic_size and tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"FakeQuantizedNetwork: this detector's fake-quantised network was traced at "
                             f"{self.image_size}, the batch is {tuple(images.shape[-2:])}; train and evaluate QAT at "
                             "the data's image_size")
        outputs = self.prepared(images)
        model = self.model
        if isinstance(model, SSDLite):  # SSDLite and the joint model
            named = {"bbox_regression": outputs[0], "cls_logits": outputs[1], "anchors": self.anchors}
            if isinstance(model, SSDLiteDeepLabV3):
                named["out"] = outputs[2]
            return named
        return {"out" if isinstance(model, DeepLabV3) else "logits": outputs}

    def postprocess(self, outputs: dict[str, Tensor], image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """A detector's post-processing (:meth:`mobilenetv2_dense.models.SSDLite.postprocess`) of :meth:`forward`'s
        outputs."""
        return self.model.postprocess(outputs, image_size)

    @torch.no_grad()
    def predict(self, images: Tensor) -> list[dict[str, Tensor]]:
        """A detector's detections per image (:meth:`mobilenetv2_dense.models.SSDLite.predict`), fake-quantised."""
        return self.postprocess(self(images), tuple(images.shape[-2:]))

    def train(self, mode: bool = True) -> FakeQuantizedNetwork:
        """Training mode updates the BatchNorm statistics and the observed ranges (unless frozen); eval mode uses
        both as they are, so validating or exporting a QAT network never moves its quantisation ranges."""
        from torchao.quantization.pt2e import disable_observer, enable_observer

        super().train(mode)
        _graph_mode(self.prepared, batch_statistics=mode and not self.frozen_batchnorm, dropout=mode)
        self.prepared.apply(enable_observer if mode and not self.frozen_observers else disable_observer)
        if self.ranges_calibrated:
            for quantiser in self.activation_quantisers():
                quantiser.disable_observer()
        self.graph_training = mode
        return self

    def activation_quantisers(self) -> list[nn.Module]:
        """The fake quantisers of activations (per tensor; those of weights are per channel)."""
        from torchao.quantization.pt2e import FakeQuantizeBase

        return [m for m in self.prepared.modules() if isinstance(m, FakeQuantizeBase) and not m.is_per_channel]

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Tensor]) -> int:
        """Set every activation range to the one PTQ (:func:`~mobilenetv2_dense.deploy.quantize.quantize_pt2e`)
        calibrates from the same weights and images: ``batches`` (normalised ``(N, 3, H, W)`` images) through the
        float network in eval mode, each activation seen by a histogram observer (XNNPACK's PTQ observer). From then
        on the ranges stay fixed (``ranges_calibrated``), while the weight scales follow the weights until
        ``freeze_observers``: QAT starts from the PTQ model and trains the weights to its ranges. (Without it, the
        ranges are moving averages of each training batch's min / max, which sit inside the extremes.) Returns the
        number of images seen."""
        from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant, enable_observer

        from .observers import HistogramObserver

        quantisers = self.activation_quantisers()
        histograms = [HistogramObserver(dtype=observer.dtype, qscheme=observer.qscheme, quant_min=observer.quant_min,
                                        quant_max=observer.quant_max, eps=float(observer.eps))
                      for observer in (quantiser.activation_post_process for quantiser in quantisers)]
        hooks = [quantiser.register_forward_pre_hook(lambda module, args, histogram=histogram: histogram(args[0]))
                 for quantiser, histogram in zip(quantisers, histograms)]
        training = self.training
        self.train(False)
        self.prepared.apply(disable_fake_quant)  # the float network, as PTQ calibrates it
        self.prepared.apply(enable_observer)  # the weights' scales, on the way
        seen = 0
        try:
            for images in batches:
                self(images)
                seen += len(images)
        finally:
            for hook in hooks:
                hook.remove()
            self.prepared.apply(enable_fake_quant)
        if seen == 0:
            raise ValueError("FakeQuantizedNetwork.calibrate: no images to calibrate the activation ranges on")
        for quantiser, histogram in zip(quantisers, histograms):
            scale, zero_point = histogram.calculate_qparams()
            observer = quantiser.activation_post_process
            # The min / max whose quantisation parameters are these: what conversion reads (calculate_qparams).
            observer.min_val.copy_(((observer.quant_min - zero_point) * scale).reshape(observer.min_val.shape))
            observer.max_val.copy_(((observer.quant_max - zero_point) * scale).reshape(observer.max_val.shape))
            quantiser.scale.copy_(scale.reshape(quantiser.scale.shape))
            quantiser.zero_point.copy_(zero_point.reshape(quantiser.zero_point.shape))
        self.ranges_calibrated.fill_(True)
        self.train(training)
        return seen

    def sync_mode(self) -> None:
        """Switch the graph to the ``training`` flag where it was set without :meth:`train` (Lightning's validation
        loop restores the flags of every submodule that way, which leaves an exported graph's BatchNorms and the
        observers as validation left them)."""
        if self.graph_training != self.training:
            self.train(self.training)

    def freeze_observers(self) -> None:
        """Stop updating the activation ranges and weight scales (fake quantisation goes on with the last ones)."""
        from torchao.quantization.pt2e import disable_observer

        self.frozen_observers = True
        self.prepared.apply(disable_observer)

    def freeze_batchnorm(self) -> None:
        """Normalise with the running statistics from now on, and stop updating them, also in ``train()`` mode:
        the weights then train against the statistics that conversion folds into them."""
        self.frozen_batchnorm = True
        _graph_mode(self.prepared, batch_statistics=False, dropout=self.training)

    def convert(self) -> nn.Module:
        """The int8 network (``convert_pt2e`` of a copy in eval mode): normalised images -> :class:`Network`'s
        outputs, with ``quantized_decomposed`` quantise / dequantise ops around int8 weights, BatchNorms folded."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        prepared = copy.deepcopy(self.prepared)
        _graph_mode(prepared, batch_statistics=False, dropout=False)
        _batchnorm_eps_into_variance(prepared)
        with conv2d_patterns_only():
            return convert_pt2e(prepared)


def _batchnorm_arguments_from(model: nn.Module, graph: torch.fx.GraphModule) -> None:
    """Give each BatchNorm of the prepared ``graph`` its module's ``eps`` and ``momentum`` back.

    torchao's ``prepare_qat_pt2e`` (0.18) replaces every Conv + BatchNorm pair by its QAT pattern, traced with
    BatchNorm's defaults, and leaves those literals in the graph: eps 1e-5 (in the ``batch_norm`` and in the
    ``running_var + eps`` of the weight's scale factor) and momentum 0.1. This project's BatchNorms use TF's eps 1e-3
    and momentum 0.03, and with 1e-5 a channel whose running variance is near zero (common in a trained network) is
    scaled up 10x: a trained SSDLite's fake-quantised network, with fake quantisation off, was 10 logits away from the
    float model. The graph's BatchNorm tensors are the model's (same objects), which identifies each module."""
    norms = {id(m.running_var): m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None}
    for node in graph.graph.nodes:
        if node.target is not torch.ops.aten.batch_norm.default:
            continue
        module = norms[id(graph.get_buffer(node.args[4].target))]
        momentum = node.args[6] if module.momentum is None else module.momentum
        node.args = (*node.args[:6], momentum, *node.args[7:])
        _set_batchnorm_eps(node, module.eps)
    graph.recompile()


def _batchnorm_eps_into_variance(graph: torch.fx.GraphModule) -> None:
    """torchao's ``convert_pt2e`` (0.18) folds each trained Conv + BatchNorm with eps 1e-5, the literal of the pattern
    it rewrites the pair into, whatever the graph's eps: give every BatchNorm of this copy eps 1e-5 and add the rest
    of its eps to its running variance, which computes the same (``var + eps`` is all BatchNorm uses)."""
    for node in graph.graph.nodes:
        if node.target is not torch.ops.aten.batch_norm.default or node.args[7] == TORCHAO_BATCHNORM_EPS:
            continue
        graph.get_buffer(node.args[4].target).add_(node.args[7] - TORCHAO_BATCHNORM_EPS)
        _set_batchnorm_eps(node, TORCHAO_BATCHNORM_EPS)
    graph.recompile()


def _set_batchnorm_eps(node: torch.fx.Node, eps: float) -> None:
    """Set the eps of a ``batch_norm`` node and of the ``running_var + eps`` of its Conv + BatchNorm QAT pattern
    (the weight's scale factor): ``running_var + a float``, a user of the same variance node."""
    variance = node.args[4]
    node.args = (*node.args[:7], eps, *node.args[8:])
    for user in list(variance.users):
        if (user.target is torch.ops.aten.add.Tensor and user.args[0] is variance and len(user.args) == 2
                and isinstance(user.args[1], float)):
            user.args = (variance, eps)


def _flags_only_train(module: nn.Module, mode: bool = True) -> nn.Module:
    for child in module.modules():
        child.training = mode
    return module


def _graph_mode(graph: torch.fx.GraphModule, *, batch_statistics: bool, dropout: bool) -> None:
    """Set the ``training`` argument of every ``aten.batch_norm`` (normalise with, and update, batch statistics) and
    ``aten.dropout`` of an exported ``graph``, which ``train()`` / ``eval()`` alone do not change (the PT2E QAT
    tutorial's way to freeze BatchNorm statistics in a prepared graph)."""
    changed = False
    for node in graph.graph.nodes:
        index, value = {torch.ops.aten.batch_norm.default: (5, batch_statistics),
                        torch.ops.aten.dropout.default: (2, dropout)}.get(node.target, (None, None))
        if index is not None and node.args[index] != value:
            node.args = (*node.args[:index], value, *node.args[index + 1:])
            changed = True
    if changed:
        graph.recompile()
