"""MobileNetV2 with an FPN inside torchvision's own detectors: FasterRCNN, RetinaNet and FCOS with their defaults."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from mobilenetv2_dense.backbone import MobileNetV2WithFPN, mobilenet_v2, mobilenet_v2_fpn

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

RETINA_FEATURES = ["stage3", "stage5", "stage7"]  # C3 .. C5, as torchvision's RetinaNet and FCOS tap ResNet


@pytest.mark.parametrize("out_features, extra, output_stride, names", [
    (None, None, 32, ["0", "1", "2", "3", "pool"]),
    (RETINA_FEATURES, "p6p7", 32, ["0", "1", "2", "p6", "p7"]),
    (["stem", "stage4", "stage6_expansion", "conv_head"], LastLevelMaxPool(), 16, ["0", "1", "2", "3", "pool"]),
])
def test_levels_are_named_as_torchvision_and_described_before_forward(out_features, extra, output_stride,
                                                                       names) -> None:
    """'0', '1', ... then the extra levels; every level has out_channels channels and the size feature_info says."""
    extra_blocks = LastLevelP6P7(24, 24) if extra == "p6p7" else extra
    kwargs = {} if out_features is None else {"out_features": out_features}
    backbone = mobilenet_v2_fpn(width_mult=0.35, out_channels=24, extra_blocks=extra_blocks,
                                output_stride=output_stride, **kwargs).eval()
    assert backbone.out_channels == 24
    assert backbone.feature_info.names == names and backbone.feature_info.channels() == [24] * len(names)
    with torch.no_grad():
        levels = backbone(torch.rand(2, 3, 72, 100))
    assert list(levels) == names
    for level, reduction in zip(levels.values(), backbone.feature_info.reduction()):
        assert level.shape == (2, 24, math.ceil(72 / reduction), math.ceil(100 / reduction))
        assert torch.isfinite(level).all()


def _batch(generator: torch.Generator) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.rand(3, 64, 64, generator=generator) for _ in range(2)]
    boxes = torch.tensor([[8.0, 8.0, 40.0, 44.0], [30.0, 20.0, 60.0, 60.0]])
    return images, [{"boxes": boxes, "labels": torch.tensor([1, 2])} for _ in images]


@pytest.mark.parametrize("detector", [FasterRCNN, RetinaNet, FCOS])
def test_torchvision_detectors_train_and_predict_with_their_defaults(detector) -> None:
    """Default anchors, RoI pooling (featmap_names '0' .. '3') and heads: losses finite and falling, then eval."""
    torch.manual_seed(0)
    if detector is FasterRCNN:
        backbone = mobilenet_v2_fpn(width_mult=0.35, out_channels=32)
    else:
        backbone = mobilenet_v2_fpn(width_mult=0.35, out_channels=32, out_features=RETINA_FEATURES,
                                    extra_blocks=LastLevelP6P7(32, 32))
    model = detector(backbone, num_classes=3, min_size=64, max_size=64)
    images, targets = _batch(torch.Generator().manual_seed(0))
    before = {name: p.detach().clone() for name, p in model.backbone.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    losses = []
    for _ in range(4):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(value) for value in losses) and losses[-1] < losses[0], losses
    changed = [name for name, p in model.backbone.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("body.stem") for name in changed) and any(name.startswith("fpn.") for name in changed)
    with torch.no_grad():
        detections = model.eval()(images)
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "scores", "labels"}


def test_torchvision_weights_frozen_norm_and_frozen_stages(tmp_path) -> None:
    """The detectors' recipe: torchvision weights in FrozenBatchNorm2d, the first stages frozen; a step moves only
    the rest, and the loaded weights are the file's."""
    reference = torchvision.models.mobilenet_v2(width_mult=0.35)
    path = tmp_path / "mobilenet_v2_035.pth"
    torch.save(reference.state_dict(), path)
    backbone = mobilenet_v2_fpn(width_mult=0.35, weights=path, norm_layer=FrozenBatchNorm2d, frozen_stages=3,
                                out_channels=32)
    assert isinstance(backbone, MobileNetV2WithFPN) and isinstance(backbone.body.stem[1], FrozenBatchNorm2d)
    torch.testing.assert_close(backbone.body.stem[0].weight, reference.features[0][0].weight, rtol=0, atol=0)
    model = FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64)
    frozen = {name: p.detach().clone() for name, p in backbone.body.named_parameters() if not p.requires_grad}
    assert frozen and all(name.startswith(("stem.", "stages.0.", "stages.1.", "stages.2.")) for name in frozen)
    stats = {name: b.clone() for name, b in backbone.body.named_buffers()}
    images, targets = _batch(torch.Generator().manual_seed(1))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(model(images, targets).values()).backward()
    optimizer.step()
    params = dict(backbone.body.named_parameters())
    assert all(torch.equal(params[name], value) for name, value in frozen.items())
    assert not torch.equal(params["stages.3.0.expand.0.weight"], reference.features[7].conv[0][0].weight)
    assert all(torch.equal(b, stats[name]) for name, b in backbone.body.named_buffers())  # frozen norm statistics


def test_body_returning_logits_is_refused_with_the_fix() -> None:
    body = mobilenet_v2(width_mult=0.35, num_classes=4, out_features=["stage7", "logits"])
    with pytest.raises(ValueError, match=r"'logits'.*out_features=\['stage2', 'stage3', 'stage5', 'stage7'\]"):
        MobileNetV2WithFPN(body)
