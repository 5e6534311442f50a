"""Gathering per-image results over DDP ranks, each image once.

A ``DistributedSampler`` without ``drop_last`` pads the last rank(s) with repeats of the first samples so every
rank runs as many batches; results keyed by image id are gathered with :func:`gather_per_image`, which keeps the
first rank's copy of a repeated image. Outside DDP (or with one process) nothing is communicated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` outside DDP.

    A collective: under DDP every rank must call it.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def gather_per_image(rows: np.ndarray, images: dict[int, Any]) -> tuple[np.ndarray, dict[int, Any]]:
    """All ranks' result rows and per-image values, each image once (all ranks get the same answer).

    Args:
        rows: ``(D, C)`` results of this rank, column 0 the image id (e.g. COCO's ``(D, 7)`` results array).
        images: image id -> a picklable value (a file path, ``None``) for every image this rank saw, with or
            without rows (an image with no detection still counts as seen).

    Returns:
        ``(rows, images)`` over all ranks: an image seen by several ranks keeps the rows and value of the lowest
        rank that saw it; rows in rank order.
    """
    kept_rows, kept = [], {}
    for rank_rows, rank_images in all_gather_objects((rows, images)):
        fresh = [image_id for image_id in rank_images if image_id not in kept]
        kept.update((image_id, rank_images[image_id]) for image_id in fresh)
        kept_rows.append(rank_rows[np.isin(rank_rows[:, 0], fresh)])
    return np.concatenate(kept_rows), kept


def sampler_repeats(loader: Any, start: int, count: int) -> list[bool]:
    """Which of this rank's samples ``start .. start + count - 1`` (in the loader's order) are a
    ``DistributedSampler``'s padding.

    Without ``drop_last`` the sampler repeats the first samples so every rank gets as many; rank ``r`` reads
    positions ``r, r + R, r + 2R, ...`` of the padded order, and positions past the dataset are repeats. Known from
    the sampler, so no rank waits on another; other samplers repeat nothing.
    """
    from torch.utils.data import DistributedSampler

    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return [False] * count
    return [sampler.rank + sampler.num_replicas * (start + i) >= len(sampler.dataset) for i in range(count)]
