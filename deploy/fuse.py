"""Conv-BN folding and ``torch.compile`` for inference, with a check that the fold really happened.

Every BatchNorm in this project's models sits directly after a conv inside an ``nn.Sequential`` (torchvision's
``Conv2dNormActivation`` in the backbone, the SSDLite extras and predictors, and every DeepLab branch, decoder
conv and ``ImagePooling``), so in eval mode each one is an affine map that can be folded into the conv before it:
``W' = W * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``.

Inductor's freezing pass folds Conv-BN too, but only when its pattern matches the traced graph; pytorch issue
131693 shows mobilenet_v2 going from a 2.4x to a 0.7x speed-up when it silently stopped matching. So
:func:`compile_for_inference` folds the modules first and :func:`assert_no_batchnorm` proves, on the exported
graph, that no batch-norm op is left for the compiler to miss.

=========================  ==========================================================================
function                   what it does
=========================  ==========================================================================
``fold_conv_bn``           eval-mode deep copy with every BN folded into its conv and replaced by Identity
``count_batchnorms``       number of BatchNorm modules (any ``_BatchNorm``: 1d/2d/3d, SyncBatchNorm)
``assert_no_batchnorm``    no BN module, and no batch-norm aten op in ``torch.export``'s graph
``compile_for_inference``  fold, check (given an example), ``torch.compile`` with inductor freezing
=========================  ==========================================================================
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

# The aten ops a BatchNorm can leave in an exported graph, across export IRs (training IR, inference IR, cuDNN).
BATCH_NORM_OPS = frozenset({
    "batch_norm",
    "native_batch_norm",
    "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional",
    "cudnn_batch_norm",
    "miopen_batch_norm",
})


def count_batchnorms(model: nn.Module) -> int:
    """Number of BatchNorm modules (``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm``) in ``model``."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, _ConvNd) and isinstance(bn, _BatchNorm) and bn.track_running_stats
            and bn.running_mean is not None and conv.out_channels == bn.num_features)


def _fold_pair(conv: _ConvNd, bn: _BatchNorm) -> _ConvNd:
    """The conv with ``bn`` folded in, on the conv's device, dtype and weight memory format."""
    dtype = conv.weight.dtype
    channels_last = conv.weight.dim() == 4 and not conv.weight.is_contiguous() and conv.weight.is_contiguous(
        memory_format=torch.channels_last)
    # Fold in float32 (or float64) even for a half-precision model: rsqrt(var + eps) in fp16 loses digits that the
    # unfolded model keeps, since its BN runs in float32 on most backends.
    work = torch.promote_types(dtype, torch.float32)
    fused = fuse_conv_bn_eval(copy.deepcopy(conv).to(work), copy.deepcopy(bn).to(work),
                              transpose=conv.transposed)
    fused = fused.to(dtype)
    if channels_last:
        fused.weight.data = fused.weight.data.contiguous(memory_format=torch.channels_last)
    return fused


def fold_conv_bn(model: nn.Module, *, strict: bool = True) -> nn.Module:
    """An eval-mode deep copy of ``model`` with every BatchNorm folded into the conv that feeds it.

    A BN is folded when it is the next child after a conv (``Conv1d/2d/3d`` or transposed) in an ``nn.Sequential``
    (or a subclass that keeps ``Sequential.forward``, such as ``Conv2dNormActivation``): the conv is replaced by the
    folded conv (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`, bias added) and the BN by ``nn.Identity``, so
    indices into the Sequential (``block.depthwise[0]``, ``predictor[-1]``) and code that unpacks it
    (``conv, norm, act = self.conv`` in ``heads/deeplab.py``'s ``ImagePooling``) keep working. ``model`` itself is
    not changed. The copy computes the same function as ``model.eval()`` up to float rounding.

    Args:
        model: any module; its parameters keep their devices and dtypes (a channels_last conv weight stays so).
        strict: raise if any BatchNorm is left unfolded; ``False`` returns the partial fold (see
            :func:`assert_no_batchnorm` for a check after the fact).

    Raises:
        ValueError: under ``strict``, naming every BN that is not directly after a matching conv in a Sequential
            whose ``forward`` runs its children in order.
    """
    folded = copy.deepcopy(model).eval()
    for parent in list(folded.modules()):  # listed first: the loop swaps children in place
        if not isinstance(parent, nn.Sequential) or type(parent).forward is not nn.Sequential.forward:
            continue  # a custom forward may not feed the conv's output straight into the BN
        children = list(parent._modules.items())
        for (conv_name, conv), (bn_name, bn) in zip(children[:-1], children[1:]):
            if _foldable(conv, bn):
                parent._modules[conv_name] = _fold_pair(conv, bn)
                parent._modules[bn_name] = nn.Identity()
    left = [name for name, m in folded.named_modules() if isinstance(m, _BatchNorm)]
    if strict and left:
        raise ValueError(
            f"fold_conv_bn: fold_conv_bn could not fold {len(left)} BatchNorm(s) of {type(model).__name__}: "
            f"{', '.join(left)}; each must be the next child after a conv with as many output channels, in an "
            "nn.Sequential without a custom forward, and track running stats. Restructure those blocks, or pass "
            "strict=False to keep them unfolded"
        )
    return folded


def _graph_ops(exported: torch.export.ExportedProgram) -> set[str]:
    """Names of the aten ops (``"convolution"``, ...) called anywhere in an exported program, subgraphs included."""
    names = set()
    for module in exported.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
                names.add(node.target._opname)  # "aten::batch_norm.default" -> "batch_norm"
    return names


def assert_no_batchnorm(model: nn.Module, example: Tensor) -> None:
    """Check that ``model`` (e.g. from :func:`fold_conv_bn`) runs ``example`` without any batch norm.

    Two checks: no BatchNorm module is left, and ``torch.export.export`` of the model on ``example (N, 3, H, W)``
    calls none of :data:`BATCH_NORM_OPS` (which also catches ``F.batch_norm`` called in a ``forward``). The export
    traces an eval-mode deep copy, so state a forward caches (SSDLite's anchors) is not written into ``model``.

    Raises:
        RuntimeError: naming the BatchNorm modules or the batch-norm ops found.
    """
    left = [name for name, m in model.named_modules() if isinstance(m, _BatchNorm)]
    if left:
        raise RuntimeError(
            f"assert_no_batchnorm: {type(model).__name__} still has {len(left)} BatchNorm module(s): "
            f"{', '.join(left)}; fold them first with fold_conv_bn(model)"
        )
    with torch.no_grad(), warnings.catch_warnings():
        # A forward that caches tensors on the module (SSDLite's anchors) warns that export assigned an attribute;
        # the attribute is on the throw-away copy.
        warnings.filterwarnings("ignore", message="The tensor attribute .* was assigned during export")
        exported = torch.export.export(copy.deepcopy(model).eval(), (example,))
    found = sorted(_graph_ops(exported) & BATCH_NORM_OPS)
    if found:
        raise RuntimeError(
            f"assert_no_batchnorm: the exported graph of {type(model).__name__} still calls {', '.join(found)}, though "
            "it has no BatchNorm module: a forward calls batch norm functionally (F.batch_norm). Give that layer a "
            "BatchNorm module after its conv in an nn.Sequential so fold_conv_bn can fold it"
        )


class CompiledInference(nn.Module):
    """``torch.compile``'d inference module: calls run under ``torch.no_grad``, which inductor's freezing needs.

    ``module`` is the folded eager model (for inspection, export, or an eager fallback); calling this module runs
    the compiled one with ``module``'s inputs and outputs (a dict of tensors for this project's models).
    """

    def __init__(self, module: nn.Module, compiled: Callable[..., object]) -> None:
        super().__init__()
        self.module = module
        # Not a registered submodule: the OptimizedModule wraps ``module`` itself, whose weights would then appear
        # twice in state_dict() and parameters().
        object.__setattr__(self, "_compiled", compiled)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self._compiled(*args, **kwargs)


def compile_for_inference(model: nn.Module, *, example: Tensor | None = None,
                          mode: str | None = None) -> CompiledInference:
    """Fold Conv-BN (:func:`fold_conv_bn`), then ``torch.compile`` with inductor and freezing.

    Freezing (``torch._inductor.config.freezing``) turns the weights into constants that inductor folds and
    pre-packs (oneDNN layouts on CPU); it is passed as a compile option, so the global config is not changed, and
    it applies only to graphs compiled without grad, hence the ``no_grad`` in :class:`CompiledInference`.

    Args:
        model: left unchanged; the result owns a folded copy.
        example: an input ``(N, 3, H, W)`` on the model's device: first :func:`assert_no_batchnorm` checks the
            folded model on it, then one call compiles for that shape here rather than on the first real call.
        mode: ``torch.compile``'s mode (``"max-autotune"``, ...); ``None`` is the default mode.

    Returns:
        a module whose calls run the compiled, folded model under ``torch.no_grad``. A forward that keeps a Python
        cache compiles twice per input size: SSDLite's anchor cache is filled on the first call and the next one,
        finding it filled, fails that guard and recompiles once (no graph break; outputs, anchors included, match).
    """
    from torch._inductor import list_mode_options  # here: importing inductor takes seconds

    # torch.compile takes mode or options, not both: spell the mode out as options and add freezing.
    options = dict(list_mode_options(mode)) if mode not in (None, "default") else {}  # rejects unknown modes
    options["freezing"] = True
    folded = fold_conv_bn(model)
    if example is not None:
        assert_no_batchnorm(folded, example)
    compiled = CompiledInference(folded, torch.compile(folded, backend="inductor", options=options))
    if example is not None:
        compiled(example)
    return compiled
