"""The model floor: importable and usable without the training stack, loads real task checkpoints with one call,
and post-processes as the tasks do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.heads.loss import SSDLossSettings
from mobilenetv2_dense.heads.postprocess import PostProcessing, postprocess_detections
from mobilenetv2_dense.models import (
    DeepLabV3,
    SSDLite,
    checkpoint_state_dict,
    deeplabv3_mobilenet_v2,
    load_checkpoint_weights,
    mobilenet_v2_classifier,
    ssdlite320_mobilenet_v2,
)
from mobilenetv2_dense.tasks.classification.module import ClassificationTask
from mobilenetv2_dense.tasks.detection.evaluation import scale_to_original
from mobilenetv2_dense.tasks.detection.module import DetectionTask
from mobilenetv2_dense.tasks.optim import Optimization
from mobilenetv2_dense.tasks.segmentation.module import SegmentationTask

REPO = Path(__file__).resolve().parents[2]
TRAINING_STACK = ("lightning", "pytorch_lightning", "albumentations", "pycocotools", "faster_coco_eval",
                  "segmentation_models_pytorch", "torchmetrics")

pytestmark = [pytest.mark.usefixtures("one_thread"),  # tests/conftest.py
              pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")]


class Settings(dict):
    """Something a checkpoint may pickle that neither torch nor an inert stand-in can rebuild (a dict subclass)."""


def run_bare(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter importing this checkout (not the test process's modules); its last
    printed line is JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ no training stack
def test_floor_imports_and_runs_without_the_training_stack(tmp_path: Path) -> None:
    report = run_bare(f"""
import json, sys, torch
torch.set_num_threads(1)
STACK = {TRAINING_STACK!r}
loaded = lambda: sorted(m for m in STACK if m in sys.modules)
import mobilenetv2_dense.backbone, mobilenetv2_dense.heads
below = loaded()
from mobilenetv2_dense.models import deeplabv3_mobilenet_v2, mobilenet_v2_classifier, ssdlite320_mobilenet_v2
images = torch.randn(2, 3, 64, 64)
detector = ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.35).eval()
detections = detector.postprocess(detector(images), (64, 64))
segmenter = deeplabv3_mobilenet_v2(num_classes=4, width_mult=0.35, decoder=True).eval()
labels = segmenter.postprocess(segmenter(images))
logits = mobilenet_v2_classifier(num_classes=5, width_mult=0.35).eval()(images)["logits"]
print(json.dumps({{"below": below, "floor": loaded(), "tasks": "mobilenetv2_dense.tasks" in sys.modules,
                  "detections": [sorted(d) for d in detections], "labels": [list(labels.shape), str(labels.dtype)],
                  "logits": list(logits.shape)}}))
""", cwd=tmp_path)
    assert report["below"] == [], f"backbone / heads import {report['below']}"
    assert report["floor"] == [], f"mobilenetv2_dense.models imports {report['floor']}"
    assert not report["tasks"]
    assert report["detections"] == [["boxes", "labels", "scores"]] * 2
    assert report["labels"] == [[2, 64, 64], "torch.int64"]
    assert report["logits"] == [2, 5]


# ------------------------------------------------------------------------------- real Lightning checkpoints
def _fit_one_step(task: L.LightningModule, loader: DataLoader, path: Path) -> Path:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(task, loader)
    trainer.save_checkpoint(path)
    return path


def _detection_loader() -> DataLoader:
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 12.0, 40.0, 52.0]]), "labels": torch.tensor([1 + i])} for i in range(2)]
    return DataLoader(list(zip(images, targets)), batch_size=2,
                      collate_fn=lambda batch: (torch.stack([b[0] for b in batch]), [b[1] for b in batch]))


# Each task as its test builds it, the floor builder arguments of the same network, and one batch to fit on.
# ``optimization`` puts a dataclass in the hyper-parameters, which weights_only only reads with tasks/ imported.
TASKS = {
    "detection": (lambda: DetectionTask(num_classes=2, backbone=BackboneSettings(width_mult=0.35, init="normal"),
                                        loss=SSDLossSettings(classification="focal"),
                                        post_processing=PostProcessing(score_thresh=0.0),
                                        optimization=Optimization(lr=1e-3)),
                  "ssdlite320_mobilenet_v2", dict(num_classes=2, width_mult=0.35, classification="focal",
                                                  post_processing=PostProcessing(score_thresh=0.0)),
                  _detection_loader),
    "segmentation": (lambda: SegmentationTask(num_classes=3, backbone=BackboneSettings(width_mult=0.35), head="aspp",
                                              decoder=True,
                                              optimization=Optimization(lr=1e-3)),
                     "deeplabv3_mobilenet_v2", dict(num_classes=3, width_mult=0.35, head="aspp", decoder=True),
                     lambda: DataLoader(TensorDataset(torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))),
                                        batch_size=2)),
    "classification": (lambda: ClassificationTask(num_classes=4, backbone=BackboneSettings(width_mult=0.35),
                                                  optimization=Optimization(lr=1e-3)),
                       "mobilenet_v2_classifier", dict(num_classes=4, width_mult=0.35),
                       lambda: DataLoader(TensorDataset(torch.randn(2, 3, 32, 32), torch.tensor([0, 3])),
                                          batch_size=2)),
}
BUILDERS = {"ssdlite320_mobilenet_v2": ssdlite320_mobilenet_v2, "deeplabv3_mobilenet_v2": deeplabv3_mobilenet_v2,
            "mobilenet_v2_classifier": mobilenet_v2_classifier}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, L.LightningModule]]:
    """Each task fitted one step and saved by its Trainer: ``{name: (ckpt path, task in eval mode)}``."""
    folder = tmp_path_factory.mktemp("floor_checkpoints")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for name, (make_task, _, _, make_loader) in TASKS.items():
        torch.manual_seed(0)
        task = make_task()
        out[name] = (_fit_one_step(task, make_loader(), folder / f"{name}.ckpt"), task.eval())
    torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("name", list(TASKS))
def test_weights_from_a_lightning_checkpoint_give_the_tasks_outputs(name: str, checkpoints) -> None:
    path, task = checkpoints[name]
    _, builder, kwargs, _ = TASKS[name]
    torch.manual_seed(1)  # another initialisation than the task's: only the checkpoint can make them equal
    model = BUILDERS[builder](weights=path, **kwargs).eval()
    assert list(checkpoint_state_dict(path)) == list(task.model.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, found = task.model(images), model(images)
    assert found.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(found[key], expected[key], rtol=0, atol=0)
    # The task's keys are the model's under "model." (configs and old checkpoints keep loading).
    assert {f"model.{key}" for key in model.state_dict()} <= set(task.state_dict())


def test_load_checkpoint_weights_reads_plain_state_dicts_and_names_mismatches(checkpoints, tmp_path: Path) -> None:
    path, task = checkpoints["segmentation"]
    plain = tmp_path / "plain.pt"
    torch.save(task.model.state_dict(), plain)
    model = deeplabv3_mobilenet_v2(num_classes=3, width_mult=0.35, head="aspp", decoder=True)
    assert load_checkpoint_weights(model, plain) is model
    for key, value in task.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(ValueError, match=r"segmentation.ckpt' does not fit this DeepLabV3: 0 missing keys \[\], "
                                         r"18 unexpected keys \['head.branches.1.*build the model with"):
        deeplabv3_mobilenet_v2(num_classes=3, width_mult=0.35, head="lite", decoder=True, weights=path)
    with pytest.raises(ValueError, match=r"shape mismatches \[.*classifier.*num_classes"):
        deeplabv3_mobilenet_v2(num_classes=5, width_mult=0.35, head="aspp", decoder=True, weights=path)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_checkpoint_weights(model, tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"junk.ckpt' is not a torch.save file .*torch.save\(model.state_dict\(\)"):
        load_checkpoint_weights(model, junk)
    odd = tmp_path / "odd.ckpt"
    torch.save({"state_dict": task.model.state_dict(), "settings": Settings(lr=0.1)}, odd)
    with pytest.raises(ValueError, match=r"odd.ckpt' cannot be read with torch.load\(weights_only=True\), even with "
                                         r"inert stand-ins for the classes it names \(\['[\w.]*\.Settings'\]\)"):
        load_checkpoint_weights(model, odd)


def test_checkpoints_load_without_tasks_imported(checkpoints, tmp_path: Path) -> None:
    """In a process that never imported tasks/, the checkpoints' Optimization is an unknown class to
    weights_only: the weights load all the same, and equal the task's outputs."""
    images = torch.randn(2, 3, 64, 64)
    expected = {}
    with torch.no_grad():
        for name, (_, task) in checkpoints.items():
            expected[name] = task.model(images)
        detection = checkpoints["detection"][1].model
        expected["detections"] = detection.postprocess(expected["detection"], (64, 64))
    torch.save({"images": images, "expected": expected}, tmp_path / "expected.pt")
    calls = {name: (builder, kwargs, str(checkpoints[name][0])) for name, (_, builder, kwargs, _) in TASKS.items()}
    report = run_bare(f"""
import json, sys, torch
torch.set_num_threads(1)
from mobilenetv2_dense import models
from mobilenetv2_dense.heads import PostProcessing  # the builders' keyword values below name it
data = torch.load("expected.pt", weights_only=True)
equal = {{}}
for name, (builder, kwargs, path) in {calls!r}.items():
    model = getattr(models, builder)(weights=path, **kwargs).eval()
    with torch.no_grad():
        outputs = model(data["images"])
    equal[name] = all(torch.equal(outputs[k], v) for k, v in data["expected"][name].items())
    if name == "detection":
        found = model.postprocess(outputs, (64, 64))
        equal["detections"] = all(torch.equal(f[k], e[k]) for f, e in zip(found, data["expected"]["detections"])
                                  for k in e)
print(json.dumps({{"equal": equal, "stack": sorted(m for m in {TRAINING_STACK!r} if m in sys.modules),
                  "tasks": "mobilenetv2_dense.tasks" in sys.modules}}))
""", cwd=tmp_path)
    assert report == {"equal": {"detection": True, "detections": True, "segmentation": True, "classification": True},
                      "stack": [], "tasks": False}


# ------------------------------------------------------------------------------------------ post-processing
@pytest.mark.parametrize("settings", [{}, dict(classification="focal", settings=PostProcessing(
    score_thresh=0.0, nms_thresh=0.3, detections_per_img=7, topk_candidates=40))])
def test_postprocess_equals_the_head_function(settings: dict) -> None:
    """``settings``: postprocess_detections' keywords, the model built with the same."""
    torch.manual_seed(0)
    model = ssdlite320_mobilenet_v2(num_classes=3, width_mult=0.35,
                                    classification=settings.get("classification", "softmax"),
                                    post_processing=settings.get("settings", PostProcessing())).eval()
    images = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        outputs = model(images)
    expected = postprocess_detections(outputs["bbox_regression"], outputs["cls_logits"], outputs["anchors"],
                                      model.box_coder, image_size=(96, 80), **settings)
    for found in (model.postprocess(outputs, (96, 80)), model.predict(images)):
        assert len(found) == 2
        for f, e in zip(found, expected):
            assert f.keys() == e.keys() == {"boxes", "scores", "labels"}
            for key in e:
                torch.testing.assert_close(f[key], e[key], rtol=0, atol=0)
    assert sum(len(d["boxes"]) for d in expected) > 0


def test_detection_task_detects_as_before() -> None:
    """The task's detections (its inference backend): the head's post-processing with the task's settings, scaled
    to original pixels, as the task computed it before the model owned its post-processing."""
    torch.manual_seed(0)
    settings = PostProcessing(score_thresh=0.02, nms_thresh=0.5, detections_per_img=9, topk_candidates=60)
    task = DetectionTask(num_classes=2, backbone=BackboneSettings(width_mult=0.35, init="normal"),
                         loss=SSDLossSettings(classification="focal"),
                         post_processing=settings).eval()
    post = task.model.post_processing
    assert (post.score_thresh, post.nms_thresh, post.detections_per_img,
            post.topk_candidates, task.model.classification) == (0.02, 0.5, 9, 60, "focal")
    images = torch.randn(2, 3, 64, 64)
    orig_sizes = [torch.tensor([128, 64]), torch.tensor([64, 96])]
    with torch.no_grad():
        outputs = task(images)
        found = scale_to_original(task.backend()(images)["detections"], (64, 64), orig_sizes)
    expected = scale_to_original(postprocess_detections(
        outputs["bbox_regression"], outputs["cls_logits"], outputs["anchors"], task.model.box_coder,
        image_size=(64, 64), classification="focal", settings=settings), (64, 64), orig_sizes)
    for f, e in zip(found, expected):
        for key in e:
            torch.testing.assert_close(f[key], e[key], rtol=0, atol=0)


def test_segmentation_labels() -> None:
    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v2(num_classes=4, width_mult=0.35).eval()
    images = torch.randn(2, 3, 50, 38)
    with torch.no_grad():
        logits = model(images)["out"]
    labels = model.predict(images)
    assert labels.shape == (2, 50, 38) and labels.dtype == torch.int64
    assert torch.equal(labels, logits.argmax(1))
    assert torch.equal(DeepLabV3.postprocess({"out": logits}), labels)


# --------------------------------------------------------------------------------- models take a backbone
def test_models_take_their_backbone() -> None:
    from mobilenetv2_dense.backbone import mobilenet_v2

    backbone = mobilenet_v2(width_mult=0.35, out_features=["stage6_expansion", "conv_head"])
    detector = SSDLite(backbone, num_classes=3, extra_channels=(64, 32, 32, 16))
    assert detector.backbone is backbone
    assert detector.head.in_features == ["stage6_expansion", "conv_head"]
    assert [p[0][0].in_channels for p in detector.head.bbox_predictors[:2]] == backbone.out_feature_info.channels()

    dilated = mobilenet_v2(width_mult=0.35, output_stride=8, out_features=["stage7"])
    segmenter = DeepLabV3(dilated, num_classes=3, head="aspp")
    assert segmenter.backbone is dilated and segmenter.head.atrous_rates == (12, 24, 36)
    with pytest.raises(ValueError, match=r"DeepLabV3: .*decoder=True.*out_features=\['stage2', 'stage7'\]"):
        DeepLabV3(dilated, num_classes=3, decoder=True)
    with pytest.raises(ValueError, match="output_stride must be 8 or 16, got 32"):
        DeepLabV3(mobilenet_v2(width_mult=0.35, out_features=["stage7"]), num_classes=3)
    with pytest.raises(ValueError, match="ssdlite320_mobilenet_v2: taps .* name the same feature twice"):
        ssdlite320_mobilenet_v2(num_classes=3, taps=("conv_head", "conv_head"))
