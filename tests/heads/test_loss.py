"""SSD loss: a hand-built case, parity with torchvision's SSD.compute_loss, focal option, empty batches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.ssd import SSD
from torchvision.ops import sigmoid_focal_loss

from mobilenetv2_dense.heads.box_coder import BoxCoder
from mobilenetv2_dense.heads.loss import SSDLoss
from mobilenetv2_dense.heads.matcher import match_anchors


def grid_anchors(cells: int = 8, size: float = 10.0) -> torch.Tensor:
    """``cells * cells`` disjoint ``size`` squares, so a gt equal to one cell matches exactly one anchor."""
    ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    xy = torch.stack([xs.flatten(), ys.flatten()], 1).float() * size
    return torch.cat([xy, xy + size], dim=1)


def test_hand_built_case_counts_three_negatives_per_positive():
    anchors = grid_anchors()  # 64 anchors
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [31.0, 31.0, 39.0, 41.0]]),
                "labels": torch.tensor([2, 1])}]
    g = torch.Generator().manual_seed(0)
    outputs = {"bbox_regression": torch.randn(1, 64, 4, generator=g), "cls_logits": torch.randn(1, 64, 4, generator=g),
               "anchors": anchors}
    coder = BoxCoder()
    losses = SSDLoss()(outputs, targets, coder)

    # Direct computation: gt 0 is anchor 0 exactly; gt 1 overlaps anchor 27 (cell x=3, y=3) with IoU 72 / 108.
    positives, labels = torch.tensor([0, 27]), torch.tensor([2, 1])
    codes = coder.encode(targets[0]["boxes"], anchors[positives])
    bbox = F.smooth_l1_loss(outputs["bbox_regression"][0, positives], codes, reduction="sum") / 2
    ce_background = F.cross_entropy(outputs["cls_logits"][0], torch.zeros(64, dtype=torch.long), reduction="none")
    ce_background[positives] = -1.0
    hard_negatives = ce_background.topk(3 * 2).values  # exactly 3 negatives per positive
    cls = (F.cross_entropy(outputs["cls_logits"][0, positives], labels, reduction="sum") + hard_negatives.sum()) / 2
    torch.testing.assert_close(losses["bbox_regression"], bbox)
    torch.testing.assert_close(losses["classification"], cls)
    torch.testing.assert_close(losses["loss"], bbox + cls)


def test_matches_torchvision_ssd_compute_loss():
    g = torch.Generator().manual_seed(1)
    anchors = grid_anchors(cells=12, size=8.0)  # 144 anchors over a 96x96 image

    def boxes(n: int) -> torch.Tensor:
        xy = torch.rand(n, 2, generator=g) * 60
        return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 30 + 6], dim=1)

    targets = [{"boxes": boxes(n), "labels": torch.randint(1, 6, (n,), generator=g)} for n in (3, 1, 5)]
    outputs = {"bbox_regression": torch.randn(3, 144, 4, generator=g),
               "cls_logits": torch.randn(3, 144, 6, generator=g), "anchors": anchors}
    ours = SSDLoss(neg_pos_ratio=3.0)(outputs, targets, BoxCoder())
    reference = SimpleNamespace(box_coder=TorchvisionBoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3)
    matched = list(match_anchors([t["boxes"] for t in targets], anchors))
    theirs = SSD.compute_loss(reference, targets, outputs, [anchors] * 3, matched)
    torch.testing.assert_close(ours["bbox_regression"], theirs["bbox_regression"])
    torch.testing.assert_close(ours["classification"], theirs["classification"])


def test_focal_ignores_background_column_and_normalises_by_positives():
    anchors = grid_anchors()
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 20.0, 20.0]]), "labels": torch.tensor([3])}]
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 64, 4, generator=g)
    outputs = {"bbox_regression": torch.zeros(1, 64, 4), "cls_logits": logits, "anchors": anchors}
    loss = SSDLoss(classification="focal")
    value = loss(outputs, targets, BoxCoder())["classification"]
    one_hot = torch.zeros(1, 64, 3)
    one_hot[0, 9, 2] = 1.0  # anchor 9 = cell (x=1, y=1), label 3 -> column 2 of the K object logits
    torch.testing.assert_close(value, sigmoid_focal_loss(logits[..., 1:], one_hot, reduction="sum") / 1)
    outputs["cls_logits"] = logits.clone()
    outputs["cls_logits"][..., 0] += 5.0
    torch.testing.assert_close(loss(outputs, targets, BoxCoder())["classification"], value)


@pytest.mark.parametrize("classification", ["softmax", "focal"])
def test_empty_batch_is_finite_and_backpropagates(classification):
    anchors = grid_anchors()
    regression = torch.randn(2, 64, 4, requires_grad=True)
    logits = torch.randn(2, 64, 4, requires_grad=True)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = SSDLoss(classification=classification)(
        {"bbox_regression": regression, "cls_logits": logits, "anchors": anchors}, [empty, empty], BoxCoder())
    assert losses["bbox_regression"] == 0
    losses["loss"].backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(regression.grad).all()
    # softmax keeps min_negatives_per_image hard negatives per image, focal pushes every object logit down
    assert (logits.grad.abs().sum(dim=(1, 2)) > 0).all()


def test_image_without_boxes_teaches_background_through_its_hardest_negatives():
    """3 x 0 positives would mine no negatives: the box-less image keeps its ``min_negatives_per_image`` (TF's 3)
    hardest anchors, and adds exactly their cross-entropy (over the batch's positives) to the loss."""
    anchors = grid_anchors()
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 64, 4, generator=g)
    outputs = {"bbox_regression": torch.zeros(2, 64, 4), "cls_logits": logits, "anchors": anchors}
    boxed = {"boxes": torch.tensor([[10.0, 10.0, 20.0, 20.0]]), "labels": torch.tensor([2])}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    num_positive = int((match_anchors([boxed["boxes"]], anchors) >= 0).sum())
    assert num_positive > 0

    with_empty = SSDLoss()(outputs, [boxed, empty], BoxCoder())["classification"]
    first = {"bbox_regression": outputs["bbox_regression"][:1], "cls_logits": logits[:1], "anchors": anchors}
    alone = SSDLoss()(first, [boxed], BoxCoder())["classification"]
    background_ce = F.cross_entropy(logits[1], torch.zeros(64, dtype=torch.long), reduction="none")
    expected_extra = background_ce.topk(3).values.sum() / num_positive
    assert expected_extra > 0
    torch.testing.assert_close(with_empty - alone, expected_extra)
    # The old behaviour (and torchvision's) is min_negatives_per_image=0: the empty image adds nothing.
    without = SSDLoss(min_negatives_per_image=0)(outputs, [boxed, empty], BoxCoder())["classification"]
    torch.testing.assert_close(without, alone)


def test_rejects_unknown_classification():
    with pytest.raises(ValueError, match="'softmax' or 'focal'"):
        SSDLoss(classification="sigmoid")


@pytest.mark.parametrize("iou_threshold", [0.4, 0.5])
def test_iou_threshold_matches_torchvision_ssd_iou_thresh(iou_threshold):
    """``iou_threshold`` (``DetectionTask``'s ``loss.iou_threshold``) gives torchvision ``SSD(iou_thresh=...)``'s loss:
    its ``SSDMatcher`` at that IoU, forced best matches included."""
    from torchvision.models.detection._utils import SSDMatcher
    from torchvision.ops import box_iou

    g = torch.Generator().manual_seed(2)
    anchors = grid_anchors(cells=12, size=8.0)
    xy = torch.rand(6, 2, generator=g) * 60
    gt = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 20 + 6], dim=1)
    targets = [{"boxes": gt[:4], "labels": torch.tensor([1, 2, 3, 1])},
               {"boxes": gt[4:], "labels": torch.tensor([2, 2])}]
    outputs = {"bbox_regression": torch.randn(2, 144, 4, generator=g),
               "cls_logits": torch.randn(2, 144, 4, generator=g), "anchors": anchors}
    ours = SSDLoss(iou_threshold=iou_threshold)(outputs, targets, BoxCoder())
    matcher = SSDMatcher(iou_threshold)
    matched = [matcher(box_iou(t["boxes"], anchors)) for t in targets]
    reference = SimpleNamespace(box_coder=TorchvisionBoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=3)
    theirs = SSD.compute_loss(reference, targets, outputs, [anchors] * 2, matched)
    torch.testing.assert_close(ours["bbox_regression"], theirs["bbox_regression"])
    torch.testing.assert_close(ours["classification"], theirs["classification"])
    assert torch.equal(match_anchors([t["boxes"] for t in targets], anchors, iou_threshold), torch.stack(matched))


def test_lower_iou_threshold_makes_more_positives_and_bad_values_fail():
    anchors = grid_anchors()
    # box 0 straddles two cells at IoU 100 / 220 each (only its forced best match at 0.5); box 1 is a cell
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 22.0], [40.0, 40.0, 50.0, 50.0]])]
    positives = {t: int((match_anchors(boxes, anchors, t) >= 0).sum()) for t in (0.4, 0.5)}
    assert positives == {0.4: 3, 0.5: 2}
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="iou_threshold must be in"):
            SSDLoss(iou_threshold=bad)


@pytest.mark.parametrize("classification", ["softmax", "focal"])
def test_per_image_terms_do_not_depend_on_the_batch_and_make_the_loss(classification):
    """Matching and mining are per image: each image's terms are the same alone or in a batch, and the batch loss
    is their sums over the batch's positives (the ratio the tasks' val/loss takes over a whole split)."""
    from mobilenetv2_dense.heads.loss import ssd_loss_from_sums

    g = torch.Generator().manual_seed(5)
    anchors = grid_anchors()
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [31.0, 31.0, 39.0, 41.0]]),
                "labels": torch.tensor([2, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
               {"boxes": torch.tensor([[40.0, 8.0, 60.0, 30.0]]), "labels": torch.tensor([3])}]
    outputs = {"bbox_regression": torch.randn(3, 64, 4, generator=g), "cls_logits": torch.randn(3, 64, 4, generator=g),
               "anchors": anchors}
    loss = SSDLoss(classification=classification)
    terms = loss.per_image(outputs, targets, BoxCoder())
    assert terms["positives"].tolist()[1] == 0 and terms["classification"][1] > 0  # the box-less image counts
    for i in range(3):
        alone = loss.per_image({**outputs, "bbox_regression": outputs["bbox_regression"][i:i + 1],
                                "cls_logits": outputs["cls_logits"][i:i + 1]}, targets[i:i + 1], BoxCoder())
        for name, value in alone.items():
            torch.testing.assert_close(value[0], terms[name][i])
    batch = loss(outputs, targets, BoxCoder())
    for name, value in ssd_loss_from_sums(**terms).items():
        torch.testing.assert_close(value, batch[name])
