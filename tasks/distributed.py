"""Evaluating a split over DDP ranks: each image once, then one value logged alike on every rank.

A ``DistributedSampler`` without ``drop_last`` pads the last rank(s) with repeats of the first samples so every
rank runs as many batches; results keyed by image id are gathered with :func:`gather_per_image`, which keeps the
first rank's copy of a repeated image, and :func:`sampler_repeats` says which samples of a batch are such repeats,
for sums over ranks. A value of the whole split is then logged with :func:`log_split_values`. Outside DDP (or with
one process) nothing is communicated.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor


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


def log_split_values(task: Any, values: Mapping[str, float | Tensor], *, prog_bar: Collection[str] = ()) -> None:
    """``task.log`` each of ``values``: epoch values of a whole split, already equal on every rank (computed from
    :func:`gather_per_image`'s results, or from sums over ranks); names in ``prog_bar`` go to the progress bar too.

    Every rank logs them, so a ``ModelCheckpoint`` or ``EarlyStopping`` monitoring one decides alike on every rank,
    with ``sync_dist=True, reduce_fx="max"``: Lightning's reduction over ranks then hands back the value unchanged
    (the maximum of equal numbers, where a mean of N float32 copies can round), and Lightning knows it is
    synchronised (with ``sync_dist=False`` it asks for ``sync_dist=True`` on every such metric). A value that
    differs between ranks must be reduced before it comes here.
    """
    for name, value in values.items():
        task.log(name, value, prog_bar=name in prog_bar, sync_dist=True, reduce_fx="max")
