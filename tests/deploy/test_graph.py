"""The deployed graphs in eager PyTorch: the fixed-shape NMS against torchvision's, and each wrapper against the
model's own ``predict`` (the export tests then compare the runtimes with these)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import batched_nms

from mobilenetv2_dense.deploy.graph import ClassifierGraph, DetectorGraph, JointGraph, SegmenterGraph, greedy_nms_mask
from mobilenetv2_dense.heads.postprocess import PostProcessing
from mobilenetv2_dense.models import deeplabv3_mobilenet_v2, mobilenet_v2_classifier, ssdlite320_mobilenet_v2
from mobilenetv2_dense.models.joint import ssdlite_deeplabv3_mobilenet_v2

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

pytestmark = pytest.mark.usefixtures("one_thread")


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BN statistics, so that scores differ between anchors (a fresh head scores all alike)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=generator)
            module.bias.data = 0.1 * torch.randn(n, generator=generator)
            module.running_mean = 0.1 * torch.randn(n, generator=generator)
            module.running_var = 0.5 + torch.rand(n, generator=generator)
    return model.eval()


@pytest.mark.parametrize("seed", range(20))
def test_greedy_nms_mask_keeps_what_batched_nms_keeps(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    n, t = 3, 60
    corners = torch.rand(n, t, 2, generator=generator) * 40  # crowded: many overlaps
    boxes = torch.cat([corners, corners + 5 + torch.rand(n, t, 2, generator=generator) * 30], dim=-1)
    scores = torch.rand(n, t, generator=generator).sort(dim=1, descending=True).values  # best first, as top-k gives
    labels = torch.randint(1, 4, (n, t), generator=generator)
    valid = scores > 0.2
    threshold = [0.3, 0.45, 0.6][seed % 3]
    keep = greedy_nms_mask(boxes, labels, valid, threshold)
    for i in range(n):
        index = valid[i].nonzero().squeeze(1)
        expected = index[batched_nms(boxes[i, index], scores[i, index], labels[i, index], threshold)]
        assert keep[i].nonzero().squeeze(1).tolist() == sorted(expected.tolist())
    assert 0 < keep.sum() < valid.sum()  # both suppression and survivors are exercised


def test_detector_graph_equals_predict() -> None:
    torch.manual_seed(0)
    model = randomise_batchnorm(ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.35, post_processing=PostProcessing(
        topk_candidates=60, detections_per_img=20)))
    graph = DetectorGraph(model, (96, 128), mean=MEAN, std=STD, category_ids=[2, 5, 11]).eval()
    images = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        boxes, scores, labels, counts = graph(images)
        expected = model.predict((images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    assert boxes.shape == (2, 20, 4) and counts.dtype == torch.int64
    for i, det in enumerate(expected):
        n = int(counts[i])
        assert n == len(det["scores"]) > 0
        torch.testing.assert_close(boxes[i, :n], det["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(scores[i, :n], det["scores"], atol=1e-6, rtol=0)
        assert labels[i, :n].tolist() == [[2, 5, 11][k - 1] for k in det["labels"].tolist()]
        assert (boxes[i, n:] == 0).all() and (labels[i, n:] == 0).all()


def test_detector_graph_pads_when_fewer_candidates_than_detections() -> None:
    model = randomise_batchnorm(ssdlite320_mobilenet_v2(num_classes=2, width_mult=0.35, post_processing=PostProcessing(
        topk_candidates=8, detections_per_img=12, score_thresh=0.0)))
    graph = DetectorGraph(model, (64, 64), mean=MEAN, std=STD).eval()
    with torch.no_grad():
        boxes, scores, labels, counts = graph(torch.rand(1, 3, 64, 64))
    assert boxes.shape == (1, 12, 4) and 0 < int(counts[0]) <= 8 and (scores[0, 8:] == 0).all()


def test_detector_graph_rejects_a_wrong_number_of_category_ids() -> None:
    model = ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.35)
    with pytest.raises(ValueError, match="2 category ids for a detector of 3 classes"):
        DetectorGraph(model, (64, 64), mean=MEAN, std=STD, category_ids=[1, 2])


def test_segmenter_and_classifier_graphs_normalise_inside() -> None:
    images = torch.rand(2, 3, 64, 80)
    normalised = (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    segmenter = randomise_batchnorm(deeplabv3_mobilenet_v2(num_classes=4, width_mult=0.35))
    classifier = randomise_batchnorm(mobilenet_v2_classifier(num_classes=6, width_mult=0.35))
    with torch.no_grad():
        logits = SegmenterGraph(segmenter, mean=MEAN, std=STD).eval()(images)
        torch.testing.assert_close(logits, segmenter(normalised)["out"])
        labels = SegmenterGraph(segmenter, mean=MEAN, std=STD, argmax=True).eval()(images)
        assert labels.dtype == torch.int64 and torch.equal(labels, logits.argmax(1))
        torch.testing.assert_close(ClassifierGraph(classifier, mean=MEAN, std=STD).eval()(images),
                                   classifier(normalised)["logits"])


def _graph(kind: str) -> nn.Module:
    post = PostProcessing(topk_candidates=12, detections_per_img=6)
    if kind == "detector":
        return DetectorGraph(ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.35, post_processing=post), (64, 80),
                             mean=MEAN, std=STD)
    if kind.startswith("joint"):
        model = ssdlite_deeplabv3_mobilenet_v2(num_classes=3, num_seg_classes=4, width_mult=0.35, post_processing=post)
        return JointGraph(model, (64, 80), mean=MEAN, std=STD, argmax=kind.endswith("argmax"))
    if kind.startswith("segmenter"):
        return SegmenterGraph(deeplabv3_mobilenet_v2(num_classes=4, width_mult=0.35), mean=MEAN, std=STD,
                              argmax=kind.endswith("argmax"))
    return ClassifierGraph(mobilenet_v2_classifier(num_classes=6, width_mult=0.35), mean=MEAN, std=STD)


@pytest.mark.parametrize("kind", ["detector", "joint", "joint_argmax", "segmenter", "segmenter_argmax", "classifier"])
def test_graph_outputs_are_what_its_contract_states(kind: str) -> None:
    """Each graph's ``outputs()``: one entry per output of ``forward``, in order, with its shape and dtype (at every
    input size a dynamic graph takes)."""
    graph = _graph(kind).eval()
    contract = graph.contract()
    assert contract["task"] == graph.task and contract["outputs"] == graph.outputs()
    sizes = [(64, 80), (72, 96)] if contract["dynamic_size"] else [(64, 80)]
    for height, width in sizes:
        with torch.no_grad():
            out = graph(torch.rand(2, 3, height, width))
        out = out if isinstance(out, tuple) else (out,)
        assert len(out) == len(contract["outputs"])
        for tensor, spec in zip(out, contract["outputs"]):
            shape = [{"N": 2, "H": height, "W": width}.get(d, d) for d in spec["shape"]]
            assert list(tensor.shape) == shape and tensor.dtype == getattr(torch, spec["dtype"]), spec["name"]


def test_graph_contracts_carry_their_task_settings() -> None:
    detector, joint = _graph("detector").contract(), _graph("joint").contract()
    assert detector["post_processing"]["detections_per_img"] == 6 and detector["post_processing"]["nms"]
    assert "anchors" in detector and "output_stride" not in detector
    assert joint["task"] == "joint" and joint["output_stride"] == 32 and joint["anchors"] == detector["anchors"]
    assert _graph("segmenter").contract()["output_stride"] in (8, 16)
    assert _graph("classifier").contract()["min_size"] == ClassifierGraph.min_size == 64
