"""Bad weights get errors that name the problem and the fix."""

import pytest
import torch
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2
from torchvision.models import resnet18

from mobilenetv2_dense.backbone import mobilenet_v2


def test_missing_file_names_path_and_fix(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*does not exist.*IMAGENET1K_V1"):
        mobilenet_v2(weights=missing)


def test_other_architecture_lists_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(resnet18().state_dict(), path)
    with pytest.raises(ValueError, match=r"do not fit.*missing keys.*unexpected keys.*conv1\.weight"):
        mobilenet_v2(weights=path)


def test_other_width_is_named(tmp_path):
    path = tmp_path / "w05.pth"
    torch.save(tv_mobilenet_v2(width_mult=0.5).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatches.*width_mult in \[0\.5\]"):
        mobilenet_v2(width_mult=1.0, weights=path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"could not read weights file.*garbage\.pth"):
        mobilenet_v2(weights=path)


def test_named_imagenet_weights_need_width_one():
    with pytest.raises(ValueError, match="width_mult=1.0"):
        mobilenet_v2(width_mult=0.5, weights="IMAGENET1K_V1")


def test_classifier_of_another_class_count_is_skipped_and_truncated_model_loads(tmp_path):
    reference = tv_mobilenet_v2()
    path = tmp_path / "tv.pth"
    torch.save(reference.state_dict(), path)
    fine_tune = mobilenet_v2(num_classes=7, weights=path)
    torch.testing.assert_close(fine_tune.stem[0].weight, reference.features[0][0].weight)
    assert fine_tune.classifier[1].weight.shape == (7, 1280)
    truncated = mobilenet_v2(out_features=["stage4"], weights=path)
    torch.testing.assert_close(truncated.stages[3][0].depthwise[0].weight, reference.features[7].conv[1][0].weight)


def test_lightning_checkpoint_of_this_project_loads(tmp_path):
    source = mobilenet_v2(out_features=["stage7"])
    path = tmp_path / "ours.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    loaded = mobilenet_v2(out_features=["stage7"], weights=path)
    torch.testing.assert_close(loaded.stages[6][0].project[0].weight, source.stages[6][0].project[0].weight)
