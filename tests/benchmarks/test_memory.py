"""``benchmarks/memory.py``: many epochs of training and validation with loader workers do not grow memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import memory


# 7 epochs of each shapes demo config through the CLI, 2 loader workers per loader started anew every epoch as the
# configs have them (4 forks an epoch), at width 0.35.
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").is_file(), reason="reads /proc/<pid>/smaps_rollup (Linux)")
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_epochs_do_not_grow_the_training_process_or_its_workers(task: str, tmp_path: Path) -> None:
    run = memory.Run(task, epochs=7, train_batches=1, val_batches=1, batch_size=16, workers=2, num_train=64,
                     width_mult=0.35)  # the narrowest backbone: the run's time is the network's, its growth is not
    records = memory.measure(run, tmp_path / "data", tmp_path)
    assert [r.epoch for r in records] == list(range(run.epochs))
    assert all(len(r.train_workers) == 2 and len(r.val_workers) == 2 for r in records)  # both loaders sampled

    # The bound: one training batch as the network takes it, (N, 3, S, S) float32, per epoch. A run that keeps
    # anything per step (a batch, outputs, a loss with its graph) grows by at least a batch per step, one step per
    # epoch here; whatever the run holds for good is there by epoch 2 (allocator and caches warm up before).
    batch_bytes = run.batch_size * 3 * run.input_size**2 * 4
    bound = batch_bytes * (len(records) - 1 - 2)
    gained = memory.growth(records)
    del gained["main rss"]  # file-backed pages (libraries, page cache) come and go with the machine's other work
    assert max(gained.values()) < bound, (
        f"{task}: memory grew from epoch 2 to {records[-1].epoch} by "
        f"{ {name: f'{value / memory.MIB:.1f} MiB' for name, value in gained.items()} }, more than one training batch "
        f"per epoch ({bound / memory.MIB:.1f} MiB)")
