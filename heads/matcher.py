"""Anchor-to-ground-truth matching for SSD (Liu et al. 2016, Sec. 2.2 "Matching strategy").

Every anchor takes the ground-truth box it overlaps most if that IoU reaches the threshold (0.5 in the
MobileNetV2 paper); on top of that each ground-truth box claims its single best anchor, whatever the IoU
(SSD's bipartite step, torchvision's ``SSDMatcher``), so that no object is left without a positive.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_iou


def pad_boxes(gt_boxes: list[Tensor], fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Stack a list of ``(M_i, ...)`` tensors into ``(N, M, ...)`` (``M = max M_i``) and a ``(N, M)`` valid mask."""
    counts = torch.tensor([len(b) for b in gt_boxes], device=gt_boxes[0].device)
    padded = pad_sequence(gt_boxes, batch_first=True, padding_value=fill)
    valid = torch.arange(padded.shape[1], device=padded.device)[None, :] < counts[:, None]
    return padded, valid


def match_anchors(gt_boxes: list[Tensor], anchors: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Index of the matched ground truth per anchor, ``(N, A)`` int64, ``-1`` for background.

    ``gt_boxes`` holds N tensors ``(M_i, 4)`` xyxy (``M_i`` may be 0); ``anchors`` is ``(A, 4)`` xyxy in the
    same pixels. Images are padded to a common ``M`` so that the whole batch is matched at once.
    """
    num_images, num_anchors = len(gt_boxes), anchors.shape[0]
    if num_images == 0:
        return torch.empty(0, num_anchors, dtype=torch.long, device=anchors.device)
    padded, valid = pad_boxes([b.to(anchors) for b in gt_boxes])  # (N, M, 4), (N, M)
    max_gt = padded.shape[1]
    if max_gt == 0:
        return torch.full((num_images, num_anchors), -1, dtype=torch.long, device=anchors.device)

    # (N * M, 4) x (A, 4) -> (N * M, A) -> (N, M, A); padding rows get -1 so that they never win a max
    iou = box_iou(padded.reshape(-1, 4), anchors).reshape(num_images, max_gt, num_anchors)
    return match_iou(iou.masked_fill(~valid[:, :, None], -1.0), valid, iou_threshold)


def match_iou(iou: Tensor, valid: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """:func:`match_anchors` from the IoU already computed: ``iou (N, M, A)`` of padded ground truth and anchors,
    padding rows (``valid (N, M)`` False) at -1; returns ``(N, A)`` int64, ``-1`` for background."""
    num_images, max_gt, num_anchors = iou.shape
    if max_gt == 0:
        return torch.full((num_images, num_anchors), -1, dtype=torch.long, device=iou.device)
    best_iou, best_gt = iou.max(dim=1)  # (N, A): the best ground truth for each anchor
    matches = torch.where(best_iou >= iou_threshold, best_gt, torch.full_like(best_gt, -1))

    # Each valid ground truth forces its best anchor positive. Padding rows scatter into an extra dump
    # column A, dropped afterwards, so that no per-image or per-box Python loop is needed.
    best_anchor = iou.argmax(dim=2)  # (N, M)
    target_column = torch.where(valid, best_anchor, torch.full_like(best_anchor, num_anchors))
    gt_index = torch.arange(max_gt, device=iou.device).expand(num_images, max_gt)
    matches = torch.cat([matches, matches.new_full((num_images, 1), -1)], dim=1)  # (N, A + 1)
    matches.scatter_(1, target_column, gt_index)
    return matches[:, :num_anchors]
