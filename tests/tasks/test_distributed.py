"""tasks/distributed.py: per-image results gathered over ranks, each image once."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from mobilenetv2_dense.tasks.distributed import all_gather_objects, gather_per_image

# Two ranks of a padded DistributedSampler over images 10, 11, 12: rank 1 repeats image 10 to even out.
RANK_IMAGES = [{10: "a.jpg", 12: "c.jpg"}, {11: "b.jpg", 10: "a.jpg"}]


def _rows(images: dict[int, str], rank: int) -> np.ndarray:
    """Two detections per image but none for image 12; column 6 records the rank that produced the row."""
    ids = [i for i in images if i != 12 for _ in range(2)]
    return np.array([[i, 0, 0, 1, 1, 0.5, rank] for i in ids], dtype=np.float64).reshape(-1, 7)


def _worker(rank: int, folder: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        rows, images = gather_per_image(_rows(RANK_IMAGES[rank], rank), RANK_IMAGES[rank])
        np.save(Path(folder) / f"rows{rank}.npy", rows)
        (Path(folder) / f"images{rank}.txt").write_text(repr(images))
        assert all_gather_objects(rank) == [0, 1]
    finally:
        torch.distributed.destroy_process_group()


def test_outside_ddp_nothing_is_communicated_or_dropped() -> None:
    rows = _rows(RANK_IMAGES[0], 0)
    got, images = gather_per_image(rows, RANK_IMAGES[0])
    np.testing.assert_array_equal(got, rows)
    assert images == RANK_IMAGES[0] and all_gather_objects("x") == ["x"]


def test_two_ranks_keep_each_image_once_from_the_first_rank_that_saw_it(tmp_path: Path) -> None:
    mp.start_processes(_worker, args=(str(tmp_path),), nprocs=2, start_method="fork")
    for rank in range(2):  # every rank gets the same answer
        rows = np.load(tmp_path / f"rows{rank}.npy")
        images = ast.literal_eval((tmp_path / f"images{rank}.txt").read_text())
        assert images == {10: "a.jpg", 12: "c.jpg", 11: "b.jpg"}  # image 12 has no rows but was seen
        assert rows[:, 0].tolist() == [10, 10, 11, 11]
        assert rows[:, 6].tolist() == [0, 0, 1, 1]  # the repeat of image 10 on rank 1 is dropped
