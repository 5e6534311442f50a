"""What a kill costs, through ``train_task.py``: in-epoch checkpoints, SIGTERM (preemption) and SIGKILL mid-write."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mobilenetv2_dense.commands.cli import cli_main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "mobilenetv2_shapes_classification.yaml")
REAL_CONFIGS = ["ssdlite_mobilenetv2_coco", "ssdlite_mobilenetv2_voc", "deeplabv3_mobilenetv2_voc",
                "deeplabv3lite_mobilenetv2_voc", "mobilenetv2_imagenet"]
STEPS_PER_EPOCH = 4  # 16 training images (4 classes x 4), batch 4
EVERY_2_STEPS = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",  # an in-epoch checkpoint
                 "--trainer.callbacks.every_n_train_steps=2", "--trainer.callbacks.save_top_k=0",
                 "--trainer.callbacks.save_last=true", "--trainer.callbacks.enable_version_counter=false"]


def tiny(root: Path, *, workers: int = 0, epochs: int = 2) -> list[str]:
    return ["--data.root", str(root), "--data.image_size", "32", "--data.batch_size", "4", "--data.num_workers",
            str(workers), "--model.backbone.width_mult", "0.35", "--trainer.max_epochs", str(epochs),
            "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1"]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a ``train_task.py`` subprocess: this checkout first on the path (also from a clone)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def fit_until_epoch_1(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, list[bytes]]:
    """``train_task.py args`` started in its own session, returned once its progress bar is one step into epoch 1
    (or it ended, or 180 s passed), with the list its output keeps arriving in."""
    child = subprocess.Popen([sys.executable, str(ROOT / "train_task.py"), *args], cwd=cwd, env=env,
                             start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[bytes] = []
    threading.Thread(target=lambda: output.extend(iter(lambda: child.stdout.read1(4096), b"")), daemon=True).start()
    in_epoch_1 = re.compile(rb"Epoch 1:[^|]*\|[^|]*\| [123]/4")  # the progress bar, one step into epoch 1
    deadline = time.monotonic() + 180
    while not in_epoch_1.search(b"".join(output)) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return child, output


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("runs/**/checkpoints/*.ckpt"))


# ------------------------------------------------------------------------------------- item 12: in-epoch saves
@pytest.mark.parametrize("name", REAL_CONFIGS)
def test_real_configs_checkpoint_within_an_epoch(name, tmp_path, monkeypatch):
    import mobilenetv2_dense.backbone.weights

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mobilenetv2_dense.backbone.weights, "load_weights", lambda model, weights: None)
    cli = cli_main(["--config", str(ROOT / "configs" / f"{name}.yaml"), "--model.init_args.num_classes", "3"],
                   run=False)  # no dataset here: the class count is given, not read from the data
    saving = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert saving[0] is cli.trainer.checkpoint_callback and saving[0].monitor, "the best-by-metric one comes first"
    in_epoch = [c for c in saving if c._train_time_interval or c._every_n_train_steps]
    assert in_epoch and all(c.save_last for c in in_epoch)
    # two callbacks that both write last.ckpt must not version it (last-v1.ckpt, last-v2.ckpt, ...)
    assert all(not c._enable_version_counter for c in saving if c.save_last)


class ReadLastCheckpoint(L.Callback):
    """Loads ``last.ckpt`` after every training batch: the step it holds, per batch."""

    def __init__(self) -> None:
        self.steps: list[int | None] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        path = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
        self.steps.append(torch.load(path)["global_step"] if path.is_file() else None)


def test_in_epoch_checkpoint_shares_last_ckpt(tiny_shapes_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["--config", CONFIG, *tiny(tiny_shapes_folder, epochs=1), *EVERY_2_STEPS], run=False)
    reader = ReadLastCheckpoint()
    cli.trainer.callbacks.insert(0, reader)  # Lightning runs checkpoint callbacks after the others
    cli.trainer.fit(cli.model, cli.datamodule)
    assert reader.steps == [None, None, 2, 2]  # written at step 2, in the middle of the epoch
    names = sorted(p.name for p in checkpoints(tmp_path))
    assert "last.ckpt" in names and not any(n.startswith("last-v") for n in names), names
    assert torch.load(Path(cli.trainer.checkpoint_callback.dirpath) / "last.ckpt")["global_step"] == 4


# ----------------------------------------------------------------------------------------- item 13: SIGTERM
def test_sigterm_saves_a_checkpoint_exits_nonzero_and_resumes(tiny_shapes_folder, tmp_path, monkeypatch):
    """Preemption signals every process of the job (here: the process group, loader workers included)."""
    args = tiny(tiny_shapes_folder, workers=1, epochs=3)
    child, output = fit_until_epoch_1(["fit", "--config", CONFIG, *args], tmp_path, child_env())
    os.killpg(child.pid, signal.SIGTERM)
    assert child.wait(timeout=120) == 128 + signal.SIGTERM, b"".join(output).decode()[-3000:]

    last = [p for p in checkpoints(tmp_path) if p.name == "last.ckpt"]
    assert len(last) == 1
    state = torch.load(last[0], weights_only=False)
    assert STEPS_PER_EPOCH < state["global_step"] < 3 * STEPS_PER_EPOCH  # saved at the signal, not at an epoch end
    monkeypatch.chdir(tmp_path)
    resumed = cli_main(["fit", "--config", CONFIG, *args, "--ckpt_path", str(last[0])])
    assert resumed.trainer.state.finished and resumed.trainer.current_epoch == 3
    assert resumed.trainer.global_step == 3 * STEPS_PER_EPOCH


# ----------------------------------------------------------------------------------- item 14: SIGKILL mid-write
KILLED_WRITING = """
import builtins, os, signal, sys
from pathlib import Path

real_open = builtins.open


class DiesMidWrite:
    '''A file written to replace last.ckpt: half of the first write reaches the disk, then SIGKILL.
    No fileno(), so shutil copies through write() as well.'''

    def __init__(self, file):
        self.file = file

    def write(self, data):
        data = bytes(data)
        self.file.write(data[: len(data) // 2 + 1])
        self.file.flush()
        os.fsync(self.file.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def open_killing(file, mode="r", *args, **kwargs):
    handle = real_open(file, mode, *args, **kwargs)
    path = Path(file) if isinstance(file, (str, os.PathLike)) else None
    if "w" in mode and path and path.name.startswith("last.ckpt") and (path.parent / "last.ckpt").is_file():
        return DiesMidWrite(handle)
    return handle


builtins.open = open_killing
from mobilenetv2_dense.commands.cli import cli_main

cli_main(sys.argv[1:])
"""


def test_kill_during_a_checkpoint_write_keeps_the_previous_last_ckpt(tiny_shapes_folder, tmp_path):
    """``$TMPDIR`` on another file system than the checkpoints (node-local or tmpfs ``/tmp``, shared storage for
    runs) is where Lightning's own writer copies into ``last.ckpt`` instead of renaming over it."""
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's folder")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other_fs:
        child = subprocess.run([sys.executable, "-c", KILLED_WRITING, "fit", "--config", CONFIG,
                                *tiny(tiny_shapes_folder, epochs=1), *EVERY_2_STEPS],
                               cwd=tmp_path, env=child_env(TMPDIR=other_fs), capture_output=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-3000:]  # killed replacing last.ckpt
    last = [p for p in checkpoints(tmp_path) if p.name == "last.ckpt"]
    assert len(last) == 1
    assert torch.load(last[0], weights_only=False)["global_step"] == 2  # whole: the one of step 2


LEFTOVER_ITERATOR = """
import atexit, sys
import torch
from torch.utils.data import DataLoader, TensorDataset
from mobilenetv2_dense.datasets.seeding import seed_worker
from mobilenetv2_dense.tasks import checkpointing

loader = DataLoader(TensorDataset(torch.arange(64.0)), batch_size=4, num_workers=1, worker_init_fn=seed_worker)
iterator = iter(loader)  # alive at exit, as an iterator held by the SIGTERM exception's traceback can be
next(iterator)
if sys.argv[1] == "after_sigterm":
    atexit.register(checkpointing._kill_loader_workers)  # what ResumableTraining.on_exception registers
raise SystemExit(143)
"""


@pytest.mark.parametrize("after_sigterm", [True, False], ids=["exits", "hangs_without_it"])
def test_exit_after_sigterm_does_not_wait_for_loader_workers_forever(after_sigterm: bool) -> None:
    """Loader workers ignore SIGTERM (the main process saves first), so multiprocessing's exit handler, which
    terminates its daemonic children and then joins them, waited forever for a worker whose iterator was still
    alive (the run then hung after saving instead of exiting 143). The handler registered on SIGTERM kills them."""
    args = [sys.executable, "-c", LEFTOVER_ITERATOR, "after_sigterm" if after_sigterm else "plain"]
    child = subprocess.Popen(args, env=child_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        code = child.wait(timeout=60 if after_sigterm else 10)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    errors = child.stderr.read().decode()
    if after_sigterm:
        assert code == 143 and "Traceback" not in errors, errors[-2000:]
    else:
        assert code is None, "the hang this guards against no longer happens; the test's premise changed"
