"""Segmentation metrics against a hand-computed confusion matrix and torchmetrics' Jaccard index."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from mobilenetv2_dense.tasks.segmentation.metrics import (
    SegmentationMetrics,
    confusion_matrix,
    format_iou_table,
    scores_from_confusion,
)

# 8 pixels, K = 4: class 3 occurs only where the target is void, so it is absent from both truth and prediction.
TARGET = torch.tensor([[[0, 0, 0, 1], [1, 2, 255, 255]]])
PRED = torch.tensor([[[0, 0, 1, 1], [1, 0, 2, 3]]])


def test_confusion_matrix_by_hand():
    expected = torch.tensor([
        [2, 1, 0, 0],  # true 0: two right, one called 1
        [0, 2, 0, 0],  # true 1: both right
        [1, 0, 0, 0],  # true 2: called 0
        [0, 0, 0, 0],  # true 3: never (the 3 predicted sits on a void pixel)
    ])
    assert torch.equal(confusion_matrix(PRED, TARGET, 4), expected)


def test_scores_by_hand_leave_absent_classes_out():
    scores = scores_from_confusion(confusion_matrix(PRED, TARGET, 4))
    iou = scores["iou"]
    assert iou[0].item() == pytest.approx(2 / 4)  # TP 2, FN 1, FP 1
    assert iou[1].item() == pytest.approx(2 / 3)  # TP 2, FP 1
    assert iou[2].item() == 0.0
    assert math.isnan(iou[3].item())
    assert scores["miou"].item() == pytest.approx((2 / 4 + 2 / 3 + 0) / 3)
    assert scores["pixel_accuracy"].item() == pytest.approx(4 / 6)


def test_scores_match_torchmetrics_jaccard():
    generator = torch.Generator().manual_seed(0)
    num_classes = 6
    target = torch.randint(0, num_classes - 1, (3, 17, 23), generator=generator)  # class 5 never true
    target[:, :2] = 255
    preds = torch.randint(0, num_classes - 1, (3, 17, 23), generator=generator)  # ... nor predicted
    scores = scores_from_confusion(confusion_matrix(preds, target, num_classes))
    reference = MulticlassJaccardIndex(num_classes, ignore_index=255, average="macro")(preds, target)
    per_class = MulticlassJaccardIndex(num_classes, ignore_index=255, average="none")(preds, target)
    assert scores["miou"].item() == pytest.approx(reference.item(), abs=1e-6)
    assert torch.allclose(scores["iou"][:5], per_class[:5])
    assert math.isnan(scores["iou"][5].item())


def test_logits_are_argmaxed():
    logits = torch.nn.functional.one_hot(PRED.clamp(max=3), 4).permute(0, 3, 1, 2).float()  # (N, H, W, K) -> NKHW
    assert torch.equal(confusion_matrix(logits, TARGET, 4), confusion_matrix(PRED, TARGET, 4))


def test_accumulation_over_batches_equals_one_batch_and_ranks_sum():
    generator = torch.Generator().manual_seed(1)
    preds = torch.randint(0, 5, (6, 9, 11), generator=generator)
    target = torch.randint(0, 5, (6, 9, 11), generator=generator)
    target[target == 4] = 255
    whole = SegmentationMetrics(5)
    whole.update(preds, target)
    batched = SegmentationMetrics(5)
    for i in range(0, 6, 2):
        batched.update(preds[i:i + 2], target[i:i + 2])
    assert torch.equal(batched.confmat, whole.confmat)
    # Two "ranks" merged with the metric's own DDP reduction (sum) give the same matrix.
    rank0, rank1 = SegmentationMetrics(5), SegmentationMetrics(5)
    rank0.update(preds[:3], target[:3])
    rank1.update(preds[3:], target[3:])
    rank0.merge_state(rank1)
    assert torch.equal(rank0.confmat, whole.confmat)
    a, b = batched.compute(), whole.compute()
    assert a["miou"].item() == pytest.approx(b["miou"].item())
    # A per-batch mean of mIoUs is a different number: the accumulation is what makes the metric right.
    per_batch = torch.stack([scores_from_confusion(confusion_matrix(preds[i:i + 2], target[i:i + 2], 5))["miou"]
                             for i in range(0, 6, 2)])
    assert per_batch.mean().item() != pytest.approx(b["miou"].item(), abs=1e-6)


def test_out_of_range_target_is_an_error_naming_the_labels():
    with pytest.raises(ValueError, match=r"\[7\].*num_classes"):
        confusion_matrix(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [1, 255]]]), 4)


def test_iou_table():
    scores = scores_from_confusion(confusion_matrix(PRED, TARGET, 4))
    table = format_iou_table(scores["iou"], ["background", "circle", "square", "cross"], miou=scores["miou"])
    lines = table.splitlines()
    assert lines[2].split() == ["background", "50.00"]
    assert lines[5].split() == ["cross", "-"]
    assert lines[-1].split() == ["mIoU", f"{100 * (2 / 4 + 2 / 3) / 3:.2f}"]
    with pytest.raises(ValueError, match="3 class names for 4"):
        format_iou_table(scores["iou"], ["a", "b", "c"])


def test_split_loss_is_the_training_loss_of_the_split_as_one_batch_whatever_the_batching():
    """SplitSegmentationLoss fed image by image gives SegmentationLoss (cross-entropy + weighted smp Dice) of the
    whole split in one batch; a class absent from the labels adds 0 Dice, as in smp."""
    from mobilenetv2_dense.tasks.segmentation.loss import (
        SegmentationLoss,
        SegmentationLossSettings,
        SplitSegmentationLoss,
    )

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 9, 11, generator=generator)
    masks = torch.randint(0, 3, (3, 9, 11), generator=generator)  # class 3 never labelled
    masks[0, :2] = 255
    settings = SegmentationLossSettings(dice_weight=0.5)
    whole = SegmentationLoss(settings)(logits, masks)
    split = SplitSegmentationLoss(4, settings)
    for i in range(3):
        split.update(logits[i:i + 1].log_softmax(1), masks[i:i + 1])
    got = split.compute()
    assert set(got) == {"loss", "ce", "dice"}
    for name in got:
        torch.testing.assert_close(got[name], whole[name], rtol=1e-5, atol=1e-6)
    mean_of_images = torch.stack([SegmentationLoss(settings)(logits[i:i + 1], masks[i:i + 1])["dice"]
                                  for i in range(3)]).mean()
    assert not torch.isclose(got["dice"], mean_of_images, rtol=1e-3)  # not a mean of per-batch Dice losses
