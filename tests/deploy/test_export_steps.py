"""The export command's steps without a trained run: the graph and label set chosen by the task's ``task_name``
(not its class), and the sidecar contract they give."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mobilenetv2_dense.commands.export import build_graph, label_set
from mobilenetv2_dense.commands.parity import parity
from mobilenetv2_dense.deploy.graph import JointGraph
from mobilenetv2_dense.heads.postprocess import PostProcessing
from mobilenetv2_dense.models.joint import ssdlite_deeplabv3_mobilenet_v2

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_a_joint_task_by_name_exports_as_joint() -> None:
    """A task named "joint" that is no DetectionTask: detector labels 1..K with category ids, the joint graph and
    its contract, the segmentation classes beside the detector's."""
    model = ssdlite_deeplabv3_mobilenet_v2(num_classes=2, num_seg_classes=3, width_mult=0.35,
                                           post_processing=PostProcessing(topk_candidates=12, detections_per_img=6))
    task = SimpleNamespace(task_name="joint", model=model.eval(), num_classes=2, num_seg_classes=3,
                           seg_class_names=None)
    data = SimpleNamespace(image_size=64, mean=MEAN, std=STD, class_names=["circle", "square"],
                           label_to_cat_id={1: 3, 2: 7})
    classes = label_set(task, data, {})
    assert classes == [{"label": 1, "id": 3, "name": "circle"}, {"label": 2, "id": 7, "name": "square"}]
    graph, example, contract = build_graph(task, data, classes, image_size=None, argmax=False)
    assert isinstance(graph, JointGraph) and example.shape == (2, 3, 64, 64)
    assert contract["task"] == "joint" and not contract["dynamic_size"] and contract["output_stride"] == 32
    assert [o["name"] for o in contract["outputs"]] == ["boxes", "scores", "labels", "num_detections", "seg_logits"]
    assert contract["outputs"][-1]["shape"] == ["N", 3, 64, 64]
    assert [c["name"] for c in contract["seg_classes"]] == ["background", "circle", "square"]
    assert contract["input"]["shape"] == ["N", 3, 64, 64] and "size_range" not in contract["input"]
    assert contract["input"]["normalization_in_graph"] == {"mean": MEAN, "std": STD}
    assert contract["classes"] == classes and contract["post_processing"]["detections_per_img"] == 6
    with torch.no_grad():
        assert len(graph(example)) == len(contract["outputs"])


def test_a_task_of_no_known_name_is_refused() -> None:
    task = SimpleNamespace(task_name="", model=None, num_classes=2)
    with pytest.raises(TypeError, match=r"build_graph: SimpleNamespace.task_name is ''"):
        build_graph(task, SimpleNamespace(), [], image_size=None, argmax=False)
    with pytest.raises(TypeError, match=r"parity: SimpleNamespace.task_name is ''"):
        parity(task, None, SimpleNamespace())
