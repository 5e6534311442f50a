"""ExecuTorch files are static (1, 3, H, W) so that XNNPACK runs every op of a segmenter: the final bilinear resize,
the dilated depthwise convolutions and, rewritten as a resize of its 1 x 1 map (deploy/lowering.py), the image
pooling's broadcast; float and int8, with parity through export.py at the file's size."""

from __future__ import annotations

import pytest
import torch

from mobilenetv2_dense.commands.export import export
from mobilenetv2_dense.datasets.images import IMAGENET_MEAN, IMAGENET_STD
from mobilenetv2_dense.deploy.formats import lower_to_xnnpack
from mobilenetv2_dense.deploy.fuse import fold_conv_bn
from mobilenetv2_dense.deploy.graph import SegmenterGraph
from mobilenetv2_dense.deploy.lowering import broadcast_as_resize
from mobilenetv2_dense.deploy.quantize import quantize_pt2e
from mobilenetv2_dense.deploy.runtime import DeployedModel, read_sidecar
from mobilenetv2_dense.models import deeplabv3_mobilenet_v2
from tests.deploy.runs import SEG_CONFIG, SEG_DATA

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = (48, 80)  # not square: each side's resize of its own


def _segmenter(head: str) -> SegmenterGraph:
    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v2(num_classes=3, head=head, width_mult=0.35).eval()  # output stride 16: dilated
    return SegmenterGraph(fold_conv_bn(model), mean=IMAGENET_MEAN, std=IMAGENET_STD).eval()


def _portable_ops(lowered) -> dict[str, int]:
    """Ops of the lowered program left to ExecuTorch's portable kernels (``getitem`` only reads a delegate's
    outputs)."""
    from executorch.devtools.backend_debug import get_delegation_info

    table = get_delegation_info(lowered.exported_program().graph_module).get_operator_delegation_dataframe()
    left = table[(table.occurrences_in_non_delegated_graphs > 0) & ~table.op_type.isin(["getitem", "Total"])]
    return dict(zip(left.op_type, left.occurrences_in_non_delegated_graphs))


@pytest.mark.parametrize("head", ["lite", "aspp"])
def test_the_pooling_broadcast_becomes_a_resize_of_the_same_values(head: str) -> None:
    graph = _segmenter(head)
    images = torch.rand(1, 3, *SIZE)
    program = torch.export.export(graph, (images,))
    assert broadcast_as_resize(program) == 1
    assert not [node for node in program.graph.nodes if node.target is torch.ops.aten.expand.default]
    with torch.no_grad():
        torch.testing.assert_close(program.module()(images), graph(images), atol=1e-5, rtol=1e-5)


# int8: PT2E calibration, then lowering a graph of quantise / dequantise pairs, ~30 s on 2 cores.
@pytest.mark.parametrize("int8", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_xnnpack_runs_every_op_of_the_segmenter(int8: bool) -> None:
    """One XNNPACK delegate, nothing portable; the .pte computes the graph (int8: within a few quantisation steps)."""
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.runtime import Runtime

    graph = _segmenter("lite")
    images = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        expected = graph(images)
        deployed = quantize_pt2e(graph, images, [torch.rand(1, 3, *SIZE) for _ in range(2)],
                                  dynamic_shapes=None) if int8 else graph
        lowered = lower_to_xnnpack(deployed, images)
    assert _portable_ops(lowered) == {}
    info = get_delegation_info(lowered.exported_program().graph_module)
    assert info.num_delegated_subgraphs == 1
    delegated = info.get_operator_delegation_dataframe().set_index("op_type")["occurrences_in_delegated_graphs"]
    assert delegated["aten_upsample_bilinear2d_vec"] == 2  # the logits' and the image pooling's
    buffer = lowered.to_executorch().buffer  # held while the program runs: ExecuTorch reads it in place
    out = Runtime.get().load_program(buffer).load_method("forward").execute([images])[0]
    tolerance = 0.2 * float(expected.abs().max()) if int8 else 1e-4
    torch.testing.assert_close(out, expected, atol=tolerance, rtol=0)


def test_segmenter_executorch_is_static_with_parity_at_its_size(seg_run) -> None:
    """export.py at 40 x 56: the sidecar states (1, 3, 40, 56); parity feeds both sides the 48 x 64 validation
    images resized to it, with ONNX's tolerances; a batch runs image by image, another size is refused."""
    folder, checkpoint = seg_run
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        path = export(["--config", SEG_CONFIG, "--ckpt_path", str(checkpoint), *SEG_DATA, "--format", "executorch",
                       "--image_size", "40", "56", "--output", str(folder / "export" / "seg.pte")])
    meta = read_sidecar(path)
    assert not meta["dynamic_size"] and meta["input"]["shape"] == [1, 3, 40, 56] and "size_range" not in meta["input"]
    parity = meta["parity"]
    assert parity["images"] == 3 and parity["pixels"] == 3 * 40 * 56 and parity["pixels_with_other_label"] == 0
    assert parity["max_logit_diff"] < 1e-3 and parity["deployed"] == parity["eager"]
    model = DeployedModel(path)
    assert model.max_input_size == (1, 3, 40, 56) and model.fixed_size == (40, 56)
    images = torch.rand(3, 3, 40, 56)
    many = model(images)["logits"]
    assert many.shape == (3, 5, 40, 56) and torch.equal(many[1:2], model(images[1:2])["logits"])
    first = model(images[:1])["logits"]
    kept = first.clone()
    model(images[2:])  # the next run must not write into what the last one returned
    assert torch.equal(first, kept)
    with pytest.raises(ValueError, match="--image_size"):
        model(torch.rand(1, 3, 48, 64))
