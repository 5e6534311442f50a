"""``benchmarks/train_vs_peers.py``: both detectors train on the same generated COCO set and are scored alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import train_vs_peers


def test_one_epoch_of_each_model_writes_comparable_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "result.json"
    train_vs_peers.main(["--sets", "shapes", "--models", "ours", "torchvision", "tv_all", "--epochs", "1",
                         "--num_train", "32", "--num_val", "8", "--workers", "0", "--data_root", str(tmp_path / "data"),
                         "--output", str(output)])
    runs = json.loads(output.read_text())
    assert [r["model"] for r in runs] == ["ours", "torchvision", "tv_all"]
    for run in runs:
        assert run["set"] == "shapes" and [e["epoch"] for e in run["epochs"]] == [1]
        assert 0.0 <= run["epochs"][0]["map"] <= 1.0 and run["train_s"] > 0
    printed = capsys.readouterr().out
    assert "best possible recall" in printed  # "ours" fits its anchors as the configs' fit_anchors does
    assert "shapes: mAP / AP50 (pycocotools)" in printed
    train_vs_peers.main(["--report", str(output)])  # the saved results print again without training
    assert "ours (seed 0)" in capsys.readouterr().out


def test_torchvision_on_our_backbone_swaps_the_backbone_alone() -> None:
    """The backbone ablation: torchvision's SSD (anchors, 6 per cell on every map) on our MobileNetV2 taps."""
    torch.manual_seed(0)
    swapped = train_vs_peers.TorchvisionOnMobileNetV2(num_classes=4, image_size=128, width_mult=0.5)
    backbone = swapped.model.backbone.backbone
    assert backbone.out_features == ["stage6_expansion", "conv_head"]
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert abs(torch.cat([c.weight.flatten() for c in convs]).std().item() - 0.03) < 2e-3  # torchvision's init
    swapped.model.train()
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]), "labels": torch.tensor([2])}] * 2
    losses = swapped.model(list(torch.rand(2, 3, 128, 128)), targets)
    assert set(losses) == {"bbox_regression", "classification"} and all(v.isfinite() for v in losses.values())


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(SystemExit, match="unknown model 'yolo'"):
        train_vs_peers.build("yolo", None, 1.0, 192, channels_last=False)
