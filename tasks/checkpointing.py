"""Runs that survive a kill: atomic checkpoint files, a checkpoint on SIGTERM, and exact resumption.

What Lightning 2.6.6 does by itself, and what :class:`ResumableTraining` (added to every run by ``train_task.py``)
changes:

- SIGTERM: Lightning's handler only sets ``trainer.received_sigterm``; the loops then raise ``SIGTERMException``
  after the current training batch (or validation batch), which is a ``SystemExit`` without a code: the process
  exits with status 0 and saves nothing, so a preempted run looks finished and loses everything since the last
  checkpoint. Here the exception saves ``last.ckpt`` beside the other checkpoints and the exit status becomes
  143 (128 + SIGTERM, the shell's code for "killed by SIGTERM"), so schedulers and scripts see an unfinished run.
- SLURM (a job Lightning detects: ``SLURM_NTASKS`` set, job name not ``bash`` / ``interactive``): on the requeue
  signal (SIGUSR1, sent ``--signal=SIGUSR1@<seconds>`` before the time limit) Lightning saves
  ``<default_root_dir>/hpc_ckpt_<N>.ckpt`` (``N`` one above the highest there), runs ``scontrol requeue <job id>``
  and trains on until SLURM ends the job with SIGTERM, as it does at the time limit, on ``scancel`` and on
  preemption. Lightning's SIGTERM handler under SLURM only adds a log line to the flag above, and the
  ``SIGTERMException`` is what this module handles, so both work: SIGTERM saves ``last.ckpt`` and, in a SLURM job,
  the same state as the next ``hpc_ckpt_<N>.ckpt``. The requeued job logs to a new version folder (away from the
  old ``last.ckpt``) and loads the highest ``N``, which is therefore always the newest state.
  :func:`slurm_resume_checkpoint` names that file; the CLI (``commands/cli.py``) passes it as ``--ckpt_path`` and
  logs it, so the model's arguments come from it as well (fitted anchors, options typed at the first start):
  Lightning alone loads it into a model built from the config only.
- ``last.ckpt``: ``ModelCheckpoint(monitor=..., save_last=True)`` writes it only at the steps where it writes a
  best-k file, i.e. in epochs where the metric improved (and validation ran): after a plateau, "last" was the
  best epoch's state, and resuming replayed the epochs since. It is now also written at the end of every epoch
  (and every 15 minutes within one by the in-epoch ``ModelCheckpoint`` of the configs).
- Checkpoint files: Lightning's ``TorchCheckpointIO`` writes to a file from ``tempfile.mkstemp()`` (``$TMPDIR``)
  and ``shutil.move``-s it over the target: a rename when ``$TMPDIR`` is on the checkpoint's file system, but a
  copy *into* the target when it is not (a node-local ``/tmp`` or tmpfs, checkpoints on shared storage), and a
  kill during that copy leaves a truncated ``last.ckpt``; a kill during the write leaves the temporary file behind.
  :class:`AtomicCheckpointIO` writes ``<name>.part`` in the target's own folder, syncs it to disk and renames it
  over the target: a kill at any moment leaves the previous file whole.
- Random states: checkpoints hold no global torch / numpy / Python RNG state, but the global torch RNG draws each
  epoch's shuffle, the loader's base seed (hence every augmentation, see ``datasets/seeding.py``) and dropout. The
  states are saved in every checkpoint and restored on resume before the first training iterator is made, so
  resuming from a checkpoint written at the end of an epoch reproduces the uninterrupted run exactly on CPU (with
  ``num_workers=0``, or workers that are not persistent).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import random
import re
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_info

EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
HPC_CHECKPOINT = re.compile(r"hpc_ckpt_(\d+)\.ckpt")  # Lightning's SLURM checkpoint names


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes ``<path>.part`` beside ``path``, fsyncs it and ``os.replace``-s it over
    ``path`` (remote paths are left to Lightning): a kill during a write never leaves a broken checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
                        ) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (got {storage_options!r}); "
                            "drop them, or configure a CheckpointIO plugin that uses them")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")  # same folder: the rename cannot turn into a copy
        with open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
        folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def rng_states() -> dict[str, Any]:
    """The global torch (CPU and current CUDA device), numpy and Python random states, as tensors and ints
    (loadable with ``torch.load(weights_only=True)``)."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    states = {"torch": torch.get_rng_state(),
              "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                        "has_gauss": int(has_gauss), "gauss": float(gauss)},
              "python": {"version": version, "state": list(python_state), "gauss": python_gauss}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"],
                         numpy["gauss"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def last_checkpoint_path(trainer: L.Trainer) -> str:
    """``last.ckpt`` in the folder of the run's checkpoints (``<default_root_dir>/checkpoints`` without any)."""
    folder = getattr(trainer.checkpoint_callback, "dirpath", None)
    return os.path.join(folder or os.path.join(trainer.default_root_dir, "checkpoints"), "last.ckpt")


def hpc_checkpoints(folder: str | Path) -> dict[int, Path]:
    """Lightning's SLURM checkpoints ``hpc_ckpt_<N>.ckpt`` in ``folder`` by ``N`` (none for a missing folder; a
    ``.part`` file left by a kill during a write is not one)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = (HPC_CHECKPOINT.fullmatch(path.name) for path in folder.iterdir())
    return {int(match[1]): folder / match[0] for match in found if match}


def slurm_resume_checkpoint(default_root_dir: str | Path | None) -> Path | None:
    """The checkpoint a command started in a SLURM job without ``ckpt_path`` loads: the highest
    ``hpc_ckpt_<N>.ckpt`` in ``default_root_dir`` (the working directory when ``None``), Lightning's own rule.
    ``None`` outside a SLURM job (``SLURMEnvironment.detect()``: ``SLURM_NTASKS`` set, job name not ``bash`` or
    ``interactive``) or without one."""
    if not SLURMEnvironment.detect():
        return None
    found = hpc_checkpoints(os.path.expanduser(default_root_dir or os.getcwd()))
    return found[max(found)] if found else None


class ResumableTraining(Callback):
    """``last.ckpt`` at every epoch end and on SIGTERM (then exit status 143), atomic checkpoint writes, RNG
    states in every checkpoint.

    ``train_task.py`` adds it to every run; see the module docstring for what each part fixes.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # only the plain default: strategies with their own IO (FSDP, DeepSpeed) or a configured plugin keep theirs
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks before it builds the first training iterator (and skips the sanity check
        # when resuming), so the shuffle, the augmentation seeds and dropout continue as they would have.
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after the epoch's validation; ModelCheckpoint callbacks (run after this one) may write the same file again
        if trainer.checkpoint_callback is not None and not trainer.fast_dev_run:
            trainer.save_checkpoint(last_checkpoint_path(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if trainer.state.fn == "fit":
            path = last_checkpoint_path(trainer)
            trainer.save_checkpoint(path)
            rank_zero_info(f"SIGTERM: saved {path} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                           f"resume with: fit --config <the same config> --ckpt_path {path}")
            if SLURMEnvironment.detect():
                # The requeued job logs to a new version folder and looks for hpc_ckpt_<N>.ckpt only: this state,
                # the newest, gets the highest N (also above the one Lightning saved on SIGUSR1 steps ago).
                numbers = hpc_checkpoints(trainer.default_root_dir)
                hpc = os.path.join(trainer.default_root_dir, f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt")
                trainer.save_checkpoint(hpc)
                rank_zero_info(f"SIGTERM in SLURM job {os.environ.get('SLURM_JOB_ID')}: saved the same state as "
                               f"{hpc}, which the requeued job (the same command) resumes from")
        exception.code = EXIT_SIGTERM
        atexit.register(_kill_loader_workers)  # runs before multiprocessing's own exit handler (atexit is LIFO)


def _kill_loader_workers() -> None:
    """At exit after a SIGTERM: SIGKILL the DataLoader workers still alive.

    Workers ignore SIGTERM (``datasets/seeding.py`` ``seed_worker``: the main process must finish its step and save
    first). Normally the loader's iterator stops them; when an iterator outlives the run (its frames held by the
    exception's traceback), multiprocessing's exit handler sends its daemonic children SIGTERM, which they ignore,
    and then waits for them: the run hung there instead of exiting with 143. SIGCHLD goes back to its default first,
    so PyTorch's worker watchdog (its SIGCHLD handler) does not raise during the exit.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
