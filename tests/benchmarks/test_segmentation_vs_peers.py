"""``benchmarks/segmentation_vs_peers.py``: the segmenters train on the same generated VOC set, see the same
batches, and are scored by one mIoU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import segmentation_vs_peers
from mobilenetv2_dense.tasks.segmentation.metrics import SegmentationMetrics


def test_one_epoch_of_each_model_writes_comparable_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "result.json"
    segmentation_vs_peers.main(["--models", "ours", "lraspp", "smp", "--epochs", "1", "--num_train", "16",
                                "--num_val", "4", "--workers", "0", "--threads", "1",
                                "--data_root", str(tmp_path / "data"), "--output", str(output)])
    runs = json.loads(output.read_text())
    assert [r["model"] for r in runs] == ["ours", "lraspp", "smp"]
    for run in runs:
        assert [e["epoch"] for e in run["epochs"]] == [1]
        assert 0.0 <= run["epochs"][0]["miou"] <= 1.0 and run["train_s"] > 0
    # ours is the demo's DeepLabv3-lite at width 0.5; the peers are the full-width published models
    assert runs[0]["params"] < runs[1]["params"] < runs[2]["params"]
    assert "mIoU and training seconds so far" in capsys.readouterr().out
    segmentation_vs_peers.main(["--report", str(output)])  # the saved results print again without training
    assert "smp (seed 0)" in capsys.readouterr().out


def test_every_model_sees_the_same_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a model's init draws from torch's generator, the loader's shuffles and augmentation are the same."""
    data = segmentation_vs_peers.datamodule(tmp_path / "data", num_train=12, num_val=2, workers=0)
    seen: dict[str, list[torch.Tensor]] = {}
    real_build = segmentation_vs_peers.build

    def recording_build(name: str, num_classes: int) -> torch.nn.Module:
        model = real_build(name, num_classes)
        original = model.forward

        def forward(images: torch.Tensor) -> dict[str, torch.Tensor]:
            if model.training:
                seen.setdefault(name, []).append(images.detach().clone())
            return original(images)

        model.forward = forward
        return model

    monkeypatch.setattr(segmentation_vs_peers, "build", recording_build)
    recipe = segmentation_vs_peers.Recipe(epochs=1)
    for name in ("ours", "ours+width_1.0"):  # different widths draw different amounts of random init
        segmentation_vs_peers.train(name, data, recipe, seed=0, eval_epochs=set(), channels_last=False)
    assert len(seen["ours"]) == len(seen["ours+width_1.0"]) == 1  # 12 images, batch 8, drop_last
    torch.testing.assert_close(seen["ours"][0], seen["ours+width_1.0"][0], rtol=0, atol=0)


def test_smp_input_is_padded_to_16_and_its_logits_cropped_back() -> None:
    torch.manual_seed(0)
    model = segmentation_vs_peers.build("smp", num_classes=3).eval()
    image = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        logits = model(image)["out"]
        padded = model.model(torch.nn.functional.pad(image, (0, 6, 0, 10)))  # 80 x 96: what the wrapper runs
    assert logits.shape == (1, 3, 70, 90)
    torch.testing.assert_close(logits, padded[..., :70, :90])


def test_evaluation_scores_like_the_task_metric(tmp_path: Path) -> None:
    """The benchmark's mIoU is SegmentationMetrics over every val image at its own size."""
    data = segmentation_vs_peers.datamodule(tmp_path / "data", num_train=8, num_val=3, workers=0)
    torch.manual_seed(0)
    model = segmentation_vs_peers.build("ours", data.num_classes)
    found = segmentation_vs_peers.evaluate(model, data, data.num_classes, torch.contiguous_format)
    metrics = SegmentationMetrics(data.num_classes)
    model.eval()
    with torch.no_grad():
        for index in range(len(data.val_dataset)):
            image, mask = data.val_dataset[index][:2]
            metrics.update(model(image[None])["out"].argmax(1), torch.as_tensor(mask)[None].long())
    assert found == pytest.approx(float(metrics.compute()["miou"]), abs=1e-6)


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(SystemExit, match="unknown model 'unet'"):
        segmentation_vs_peers.build("unet", 3)
