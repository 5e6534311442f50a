"""Random augmentation that ``seed_everything`` reaches, with different draws in every worker and every epoch.

albumentations 2.x gives each ``Compose`` a private numpy ``Generator`` and Python ``Random``, seeded from the OS
when the pipeline is built: ``seed_everything`` does not reach them, and forked DataLoader workers all start from
the same copy, so with 2 workers batch 0 and batch 1 got the same scale, crop and flip. Here every pipeline is
reseeded from torch's seeds whenever an epoch's iterator is made:

- in each worker, from the worker's seed (``get_worker_info().seed`` = the iterator's base seed + worker id);
- with ``num_workers=0``, from one draw of the same generator torch draws the base seed from (the global torch
  RNG unless the loader has a ``generator``).

Both seeds are mixed with the process's rank (DDP ranks start from the same global seed and would otherwise apply
the same sequence of augmentations to their shards). They descend from the global torch RNG, so two runs with the
same ``seed_everything`` augment alike, and restoring that RNG on resume
(``mobilenetv2_dense.tasks.checkpointing.ResumableTraining``)
restores the augmentation too, except with ``persistent_workers``: their pipelines are seeded once and run on
across epochs in processes whose state no checkpoint holds.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, get_worker_info


def datasets_in(dataset: Dataset) -> Iterator[Dataset]:
    """The dataset and every dataset it wraps (``ConcatDataset`` parts, ``Subset`` sources)."""
    yield dataset
    if isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            yield from datasets_in(part)
    elif isinstance(dataset, Subset):
        yield from datasets_in(dataset.dataset)


def seed_transforms(dataset: Dataset, seed: int) -> None:
    """Reseed the ``transform`` of ``dataset`` and of every dataset it wraps (anything with ``set_random_seed``:
    albumentations' ``Compose``, ``DetectionTransform``) from torch's ``seed`` and this process's rank."""
    rank = getattr(rank_zero_only, "rank", 0) or 0  # set by Lightning in every DDP process (and its workers)
    mixed = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    for part in datasets_in(dataset):
        reseed = getattr(getattr(part, "transform", None), "set_random_seed", None)
        if reseed is not None:
            reseed(mixed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed this worker's transforms from its torch seed; leave SIGTERM to the
    main process, which finishes the step, saves a checkpoint and then stops the workers (a scheduler that
    preempts a job signals every process in it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    info = get_worker_info()
    seed_transforms(info.dataset, info.seed)


class SeededDataLoader(DataLoader):
    """A ``DataLoader`` whose dataset transforms are reseeded from torch for every epoch (see the module docstring).

    Pass ``worker_init_fn=seed_worker`` for workers; with ``num_workers=0`` the loader seeds them itself.
    """

    def __iter__(self):
        if self.num_workers == 0:
            seed = torch.empty((), dtype=torch.int64).random_(generator=self.generator).item()
            seed_transforms(self.dataset, seed)
        return super().__iter__()


def seeded_loader(dataset: Dataset, **kwargs) -> SeededDataLoader:
    """``SeededDataLoader(dataset, worker_init_fn=seed_worker, **kwargs)``: the loader every data module uses."""
    return SeededDataLoader(dataset, worker_init_fn=seed_worker, **kwargs)
