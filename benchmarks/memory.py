"""Long runs do not grow: the resident memory of the training process and of each loader worker, epoch by epoch.

    python -m benchmarks.memory [--tasks detection segmentation] [--epochs 12] [--train_batches 8] [--val_batches 4]
                                [--batch_size 8] [--workers 2] [--persistent_workers] [--num_train 256]
                                [--python_records] [--data_root data/memory]

Trains the shapes demo configs (``configs/ssdlite_shapes_demo.yaml``, ``configs/deeplabv3lite_shapes_demo.yaml``) on
small generated images through ``train_task.py fit``, each task in its own process, with ``--workers`` DataLoader
processes, validating every epoch, and records with :class:`EpochMemory` (a Lightning callback any run can add:
``--trainer.callbacks+=benchmarks.memory.EpochMemory``) in every epoch:

  main      the training process at the epoch's end, after a garbage collection and ``malloc_trim``;
  train w*  each training-loader worker at the epoch's last training batch;
  val w*    each validation-loader worker at the epoch's last validation batch.

From ``/proc/<pid>/smaps_rollup`` (Linux): the main process's RSS (resident pages) and heap (its resident pages not
backed by a file: Python objects, tensors; what a leak grows), and each worker's USS (the pages only that worker
maps, ``Private_Clean + Private_Dirty``). A forked worker starts out sharing every page of the main process, so its
USS is what it has made its own since; that is where copy-on-access shows: reading a Python object writes its
reference count, so a list of per-sample objects (paths, dicts of annotations) is copied into every worker page by
page as the epochs visit it (https://github.com/pytorch/pytorch/issues/13246). ``--python_records`` stores the
records that way, as releases before this benchmark did, to show the difference. After the table comes the growth
from epoch 2 (the first epochs warm the allocator and the caches up) to the last.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L

from .common import print_table

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"detection": ROOT / "configs" / "ssdlite_shapes_demo.yaml",
           "segmentation": ROOT / "configs" / "deeplabv3lite_shapes_demo.yaml"}
MIB = 1024 * 1024


@dataclass(frozen=True)
class Memory:
    """One process's memory in bytes: ``rss`` resident, ``anon`` the resident pages not backed by a file (the heap:
    Python objects, tensors; what a leak grows), ``uss`` the pages no other process maps."""

    rss: int
    anon: int
    uss: int


def process_memory(pid: int) -> Memory | None:
    """The memory of process ``pid`` from ``/proc/<pid>/smaps_rollup`` (Linux 4.14 and later), or ``None`` once it
    has exited."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return None
    kib = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:] if line.endswith(" kB")}
    return Memory(rss=kib["Rss"] * 1024, anon=kib["Anonymous"] * 1024,
                  uss=(kib["Private_Clean"] + kib["Private_Dirty"]) * 1024)


def release_free_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the OS (glibc's ``malloc_trim``), so that the
    main process's resident memory counts what it holds rather than what malloc keeps for later: without it the
    heap moves by tens of MiB from epoch to epoch with nothing held."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the numbers then include the allocator's free pages
        pass


@dataclass
class EpochRecord:
    """What :class:`EpochMemory` saw in one epoch: the main process and each worker of either loader, in the order
    the workers were started (pid order within the epoch)."""

    epoch: int
    main: Memory
    train_workers: list[Memory] = field(default_factory=list)
    val_workers: list[Memory] = field(default_factory=list)


class EpochMemory(L.Callback):
    """Samples the memory of the training process and of its DataLoader workers once per epoch (see the module
    docstring); ``records`` holds one :class:`EpochRecord` per finished training epoch.

    Workers are this process's live ``multiprocessing`` children, told apart by when they first show up: those alive
    at the epoch's last training batch are training workers, new ones at the last validation batch are validation
    workers (persistent workers keep their pid across epochs, the others are started anew every epoch).
    """

    def __init__(self) -> None:
        self.records: list[EpochRecord] = []
        self._train_pids: set[int] = set()
        self._val_pids: set[int] = set()
        self._train: list[Memory] = []
        self._val: list[Memory] = []

    @staticmethod
    def _children(exclude: set[int]) -> dict[int, Memory]:
        pids = sorted(child.pid for child in multiprocessing.active_children() if child.pid not in exclude)
        sampled = {pid: process_memory(pid) for pid in pids}
        return {pid: memory for pid, memory in sampled.items() if memory is not None}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if batch_idx == trainer.num_training_batches - 1:
            workers = self._children(exclude=self._val_pids)  # persistent val workers are alive here too
            self._train_pids |= set(workers)
            self._train = list(workers.values())

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking or batch_idx != trainer.num_val_batches[dataloader_idx] - 1:
            return
        workers = self._children(exclude=self._train_pids)  # this epoch's train workers may not have exited yet
        self._val_pids |= set(workers)
        self._val = list(workers.values())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # In Lightning 2.x an epoch's validation runs before this hook, so both loaders are in this record.
        release_free_memory()
        self.records.append(EpochRecord(trainer.current_epoch, process_memory(os.getpid()), self._train, self._val))
        self._train, self._val = [], []


def growth(records: list[EpochRecord], *, first_epoch: int = 2) -> dict[str, int]:
    """Bytes gained from ``first_epoch`` to the last record: main RSS and heap, and the largest gain in USS of the
    workers of either loader. Workers are compared by their position (worker 0 with worker 0)."""
    start, end = records[first_epoch], records[-1]
    out = {"main rss": end.main.rss - start.main.rss, "main heap": end.main.anon - start.main.anon}
    for name in ("train_workers", "val_workers"):
        pairs = zip(getattr(start, name), getattr(end, name))
        out[f"{name.replace('_workers', '')} worker uss"] = max((b.uss - a.uss for a, b in pairs), default=0)
    return out


@dataclass(frozen=True)
class Run:
    """One measured run: ``task`` (a key of :data:`CONFIGS`) for ``epochs`` epochs of ``train_batches`` training
    batches (0: the whole split) and ``val_batches`` validation batches of ``batch_size``, ``workers`` loader
    processes per loader, over ``num_train`` generated training images (and 32 validation images) of about
    ``input_size * 4 / 3`` pixels."""

    task: str
    epochs: int = 12
    train_batches: int = 8
    val_batches: int = 4
    batch_size: int = 8
    workers: int = 2
    persistent: bool = False
    num_train: int = 256
    input_size: int = 96  # the side of the square training input: the detector's resized image, the segmenter's crop
    width_mult: float | None = None  # the backbone's width (None: the config's); memory growth does not depend on it

    def args(self, data_root: Path) -> list[str]:
        """``train_task.py fit`` options for this run of the task's demo config, with :class:`EpochMemory`; the
        data are generated under ``data_root`` (not in the demo's own folder, written with other settings)."""
        scene = self.input_size * 4 // 3
        folder = str(data_root / f"{self.task}_{self.num_train}x{scene}")  # one per data setting: none rewritten
        if self.task == "detection":
            data = ["--data.init_args.root", folder, "--data.init_args.scene_size", str(scene),
                    "--data.init_args.image_size", str(self.input_size)]
        else:
            data = ["--data.init_args.root", folder, "--data.init_args.image_size", f"[{self.input_size}, {scene}]",
                    "--data.init_args.crop_size", str(self.input_size)]
        limit = lambda batches: str(batches or 1.0)  # Lightning reads 1.0 as the whole split
        return ["fit", "--config", str(CONFIGS[self.task]), *data,
                "--data.init_args.num_train", str(self.num_train), "--data.init_args.num_val", "32",
                "--data.init_args.batch_size", str(self.batch_size), "--data.init_args.val_batch_size", "8",
                "--data.init_args.num_workers", str(self.workers),
                "--data.init_args.persistent_workers", str(self.persistent).lower(),
                "--trainer.max_epochs", str(self.epochs), "--trainer.check_val_every_n_epoch", "1",
                "--trainer.limit_train_batches", limit(self.train_batches),
                "--trainer.limit_val_batches", limit(self.val_batches),
                "--trainer.num_sanity_val_steps", "0", "--trainer.enable_model_summary", "false",
                "--trainer.callbacks+=benchmarks.memory.EpochMemory",
                *(["--model.init_args.backbone.width_mult", str(self.width_mult)] if self.width_mult else [])]


def measure(run: Run, data_root: Path, run_dir: Path) -> list[EpochRecord]:
    """Train ``run`` through the CLI in ``run_dir`` (its ``runs/`` folder lands there) and return the epoch
    records."""
    from mobilenetv2_dense.commands.cli import cli_main

    args = run.args(data_root.resolve())
    cwd = Path.cwd()
    os.chdir(run_dir)
    try:
        cli = cli_main(args)
    finally:
        os.chdir(cwd)
    # The CLI imports the callback as benchmarks.memory.EpochMemory, which under `python -m` is not this module.
    from . import memory

    return next(c for c in cli.trainer.callbacks if isinstance(c, memory.EpochMemory)).records


def keep_python_records() -> None:
    """Store the datasets' records as the releases before this benchmark did, to see what that costs: a Python
    object per sample in the segmentation datasets, and the COCO training annotations kept as pycocotools' dicts."""
    from mobilenetv2_dense.datasets.detection.coco import COCODetection
    from mobilenetv2_dense.datasets.segmentation.dataset import SampleTable

    COCODetection.keeps_coco = True
    SampleTable.of = classmethod(lambda cls, samples: list(samples))


def print_records(title: str, records: list[EpochRecord]) -> None:
    mib = lambda value: f"{value / MIB:.1f}"
    train = max(len(r.train_workers) for r in records)
    val = max(len(r.val_workers) for r in records)
    header = ("epoch", "main RSS", "main heap", *(f"train w{i} USS" for i in range(train)),
              *(f"val w{i} USS" for i in range(val)))
    rows = [(r.epoch, mib(r.main.rss), mib(r.main.anon), *(mib(m.uss) for m in r.train_workers),
             *(["-"] * (train - len(r.train_workers))), *(mib(m.uss) for m in r.val_workers),
             *(["-"] * (val - len(r.val_workers)))) for r in records]
    print_table(f"{title} (MiB)", rows, header)
    if len(records) > 3:
        print(f"from epoch 2 to epoch {records[-1].epoch}: " +
              ", ".join(f"{name} {value / MIB:+.1f} MiB" for name, value in growth(records).items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    parser.add_argument("--epochs", type=int, default=Run.epochs)
    parser.add_argument("--train_batches", type=int, default=Run.train_batches,
                        help="training batches per epoch (0: the whole split)")
    parser.add_argument("--val_batches", type=int, default=Run.val_batches,
                        help="validation batches per epoch (0: the whole split)")
    parser.add_argument("--batch_size", type=int, default=Run.batch_size, help="training batch")
    parser.add_argument("--workers", type=int, default=Run.workers, help="DataLoader processes per loader")
    parser.add_argument("--persistent_workers", action="store_true",
                        help="keep the workers across epochs (the demo configs start them anew every epoch)")
    parser.add_argument("--num_train", type=int, default=Run.num_train,
                        help="training images generated: the number of records the dataset holds")
    parser.add_argument("--python_records", action="store_true",
                        help="hold the records as Python objects, as before (see keep_python_records)")
    parser.add_argument("--data_root", default="data/memory", help="where the generated data are written")
    args = parser.parse_args(argv)
    if len(args.tasks) > 1:  # one process per task: what one task leaves in memory is not the next one's
        for task in args.tasks:
            options = _without_tasks(sys.argv[1:] if argv is None else argv)
            subprocess.run([sys.executable, "-m", "benchmarks.memory", *options, "--tasks", task], check=True)
        return
    if args.python_records:
        keep_python_records()
    run = Run(args.tasks[0], epochs=args.epochs, train_batches=args.train_batches, val_batches=args.val_batches,
              batch_size=args.batch_size, workers=args.workers, persistent=args.persistent_workers,
              num_train=args.num_train)
    with tempfile.TemporaryDirectory() as run_dir:
        records = measure(run, Path(args.data_root), Path(run_dir))
    kind = "persistent" if run.persistent else "non-persistent"
    batches = lambda n: "all" if n == 0 else str(n)
    print_records(f"{run.task}: {run.num_train} training images, {run.workers} {kind} workers, "
                  f"{batches(run.train_batches)} training batches of {run.batch_size} and {batches(run.val_batches)} "
                  f"validation batches per epoch{', Python records' if args.python_records else ''}", records)


def _without_tasks(argv: list[str]) -> list[str]:
    """``argv`` without ``--tasks`` and its values."""
    out, skipping = [], False
    for arg in argv:
        if arg == "--tasks" or arg.startswith("--tasks="):
            skipping = arg == "--tasks"
            continue
        if skipping and not arg.startswith("--"):
            continue
        skipping = False
        out.append(arg)
    return out


if __name__ == "__main__":
    main()
