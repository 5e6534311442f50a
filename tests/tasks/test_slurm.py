"""SLURM jobs through ``train_task.py``, simulated on this machine: the ``SLURM_*`` variables of a one-task job and a
``scontrol`` on the ``PATH`` that records its arguments and, like slurmctld requeueing a running job, sends the job
SIGTERM. The requeue signal (SIGUSR1), SIGTERM (time limit, ``scancel``, preemption) and the requeued job, which is
the same command run again in the same environment (``tasks/checkpointing.py`` explains the files)."""

from __future__ import annotations

import csv
import os
import re
import shlex
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

import mobilenetv2_dense.tasks.detection.anchors as anchors_module
from mobilenetv2_dense.commands.cli import checkpoint_hyperparameters, cli_main
from mobilenetv2_dense.heads.anchors import AnchorSettings
from mobilenetv2_dense.tasks.checkpointing import hpc_checkpoints, slurm_resume_checkpoint
from tests.deploy.runs import QUIET
from tests.tasks.test_fit_anchors import THIN, anchor_values, thin_data
from tests.tasks.test_preemption import CONFIG, ROOT, STEPS_PER_EPOCH, child_env, fit_until_epoch_1, tiny

JOB_ID = "4242"
JOB = {"SLURM_NTASKS": "1", "SLURM_JOB_ID": JOB_ID, "SLURM_NODELIST": "node1", "SLURM_PROCID": "0",
       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "train"}  # not "bash": a batch job
SCONTROL = """#!/bin/sh
echo "$@" >> "$SCONTROL_LOG"
kill -TERM "$PPID"
"""


def slurm_job(folder: Path) -> dict[str, str]:
    """The job's variables, with the fake ``scontrol`` first on the ``PATH`` (it appends to ``scontrol.log``)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    return {**JOB, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SCONTROL_LOG": str(folder / "scontrol.log")}


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True, mmap=True)["global_step"]


def first_logged_step(log_dir: Path) -> int:
    with open(log_dir / "metrics.csv") as file:
        return min(int(row["step"]) for row in csv.DictReader(file))


def test_hpc_checkpoints_are_numbered_and_found_only_in_a_slurm_job(tmp_path: Path, monkeypatch) -> None:
    for name in ("hpc_ckpt_9.ckpt", "hpc_ckpt_10.ckpt", "hpc_ckpt_11.ckpt.part", "last.ckpt"):
        (tmp_path / name).touch()
    assert sorted(hpc_checkpoints(tmp_path)) == [9, 10]  # a .part left by a kill is not a checkpoint
    for name in JOB:
        monkeypatch.delenv(name, raising=False)
    assert slurm_resume_checkpoint(tmp_path) is None  # not a SLURM job: the files are left alone
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # salloc / srun --pty: Lightning does not treat it as a job
    assert slurm_resume_checkpoint(tmp_path) is None
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert slurm_resume_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"  # 10 > 9, as numbers


def test_requeue_signal_saves_requeues_and_the_requeued_job_resumes(tiny_shapes_folder, tmp_path, monkeypatch,
                                                                    caplog) -> None:
    """SIGUSR1 (``#SBATCH --signal=SIGUSR1@90``): Lightning saves ``hpc_ckpt_1.ckpt`` and runs ``scontrol requeue
    4242``; the requeue's SIGTERM saves ``last.ckpt`` and the same state as ``hpc_ckpt_2.ckpt`` and exits 143; the
    requeued job (the same command) resumes from ``hpc_ckpt_2.ckpt`` at its step and finishes."""
    job = slurm_job(tmp_path)
    args = ["fit", "--config", CONFIG, *tiny(tiny_shapes_folder, epochs=3)]
    child, output = fit_until_epoch_1(args, tmp_path, child_env(**job))
    os.kill(child.pid, signal.SIGUSR1)  # SLURM signals the job step's tasks
    assert child.wait(timeout=120) == 143, b"".join(output).decode()[-3000:]

    assert (tmp_path / "scontrol.log").read_text() == f"requeue {JOB_ID}\n"
    run_dir = tmp_path / "runs" / "shapes_classification"  # the config's default_root_dir
    hpc = hpc_checkpoints(run_dir)
    assert sorted(hpc) == [1, 2]  # 1: Lightning's, on SIGUSR1; 2: the same state as last.ckpt, on SIGTERM
    last = next(run_dir.glob("csv/version_0/checkpoints/last.ckpt"))
    assert step_of(hpc[2]) == step_of(last) >= step_of(hpc[1]) > STEPS_PER_EPOCH

    for name, value in job.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        requeued = cli_main(args)
    assert f"SLURM job {JOB_ID}: fit resumes from {Path('runs/shapes_classification/hpc_ckpt_2.ckpt')}" in caplog.text
    assert Path(requeued.trainer.ckpt_path).resolve() == hpc[2].resolve()
    assert first_logged_step(run_dir / "csv" / "version_1") == step_of(hpc[2])  # from the saved step, not from 0
    assert requeued.trainer.state.finished and requeued.trainer.global_step == 3 * STEPS_PER_EPOCH


class SigtermAtStep(L.Callback):
    """SIGTERM to this process after the training step that reaches ``step`` (what SLURM sends at the time limit)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_in_a_slurm_job_and_the_requeued_fit_keeps_the_fitted_anchors(tmp_path, monkeypatch, caplog) -> None:
    """Time limit or ``scancel`` without a requeue signal: SIGTERM saves ``last.ckpt`` and ``hpc_ckpt_1.ckpt``
    (nothing is requeued); the job started again builds the model from the checkpoint's arguments, so anchors
    fitted at the first start are kept (Lightning alone loads the checkpoint into the config's default anchors)."""
    for name, value in slurm_job(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    args = ["--config", THIN, *thin_data(tmp_path / "thin"), *QUIET,
            "--model.init_args.backbone.width_mult", "0.35", "--model.init_args.fit_anchors", "true",
            "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0"]
    first = cli_main(args, run=False)
    first.trainer.callbacks.insert(0, SigtermAtStep(2))
    with pytest.raises(SystemExit) as stopped:
        first.trainer.fit(first.model, first.datamodule)
    assert stopped.value.code == 143
    assert not (tmp_path / "scontrol.log").exists()  # SIGTERM alone requeues nothing

    run_dir = tmp_path / "runs" / "thin_shapes"
    hpc = hpc_checkpoints(run_dir)
    last = next(run_dir.glob("csv/version_0/checkpoints/last.ckpt"))
    assert list(hpc) == [1] and step_of(hpc[1]) == step_of(last) == 2
    fitted = anchor_values(checkpoint_hyperparameters(hpc[1]))
    assert fitted != anchor_values(AnchorSettings())

    def refuse(*args, **kwargs):
        raise AssertionError("the requeued fit fitted the anchors again")

    monkeypatch.setattr(anchors_module, "fit_model_anchors", refuse)
    with caplog.at_level("INFO"):
        requeued = cli_main(["fit", *args])
    assert f"fit resumes from {Path('runs/thin_shapes/hpc_ckpt_1.ckpt')} (epoch 0, step 2)" in caplog.text
    assert anchor_values(requeued.model.model.anchor_settings) == fitted
    assert requeued.trainer.state.finished and requeued.trainer.global_step == 4


def test_sbatch_script_options_parse(tmp_path, monkeypatch, capsys) -> None:
    """The ``srun`` line of ``scripts/slurm/train_coco.sbatch``, with the variables SLURM sets for its
    ``#SBATCH`` lines, is a valid command line (``--print_config`` parses it and stops), and the docs show it."""
    script = (ROOT / "scripts" / "slurm" / "train_coco.sbatch").read_text()
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)=?(\S*)", script, re.M))
    assert directives["signal"].startswith("SIGUSR1@") and "requeue" in directives
    monkeypatch.setenv("SLURM_NNODES", directives["nodes"])  # what SLURM sets from the #SBATCH lines
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", directives["ntasks-per-node"])
    monkeypatch.setenv("SLURM_JOB_ID", JOB_ID)
    command = re.search(r"^srun (.+)$", script.replace("\\\n", " "), re.M)[1]
    words = [os.path.expandvars(word) for word in shlex.split(command)]
    assert words[:3] == ["python", "train_task.py", "fit"]
    monkeypatch.chdir(ROOT)  # the script runs from the repository (configs/...)
    with pytest.raises(SystemExit) as printed:
        cli_main([*words[2:], "--print_config"])
    assert printed.value.code == 0
    docs = (ROOT / "docs" / "long-runs.md").read_text()
    lines = [line for line in script.splitlines() if line.strip() and not line.startswith(("# ", "#!"))]
    assert [line for line in lines if line not in docs] == [], "docs/long-runs.md shows another script"
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert str(trainer["num_nodes"]) == directives["nodes"] and str(trainer["devices"]) == directives["ntasks-per-node"]
    assert trainer["default_root_dir"].endswith(JOB_ID)  # a requeue keeps the job id: one folder per job
