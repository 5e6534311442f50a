"""Multi-process fit through the CLI, as users run DDP: ``--trainer.strategy ddp --trainer.devices 2
--trainer.accelerator cpu`` (two processes on gloo), for the detector, the segmenter and the joint model.

Each fit checks that the two ranks trained on different images with different augmentation draws, that one
checkpoint folder holds one set of files, and that every validation value the run logged (``val/map*``, ``val/miou``,
``val/loss`` and its parts) equals a single-process ``validate`` of its ``last.ckpt``: the val sets have an odd number
of images, so the DistributedSampler pads a rank with a repeat, and the ranks batch the split differently from one
process. The detector runs as users run it, ``train_task.py`` launching its own second process (``ddp``), and is
then resumed from its checkpoint in two processes; the segmenter and the joint model fork theirs from ``cli_main``
(``ddp_fork``: the same DDP strategy and evaluation, without a second interpreter start-up per run), as does the
detector's quantisation-aware training, whose ranks must end with one set of activation ranges.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.seeding import datasets_in
from tests.conftest import JOINT_CONFIG
from tests.deploy.runs import DET_CONFIG, QUIET, SEG_CONFIG

ROOT = Path(__file__).resolve().parents[2]
TWO_PROCESSES = ["--trainer.devices", "2", "--trainer.accelerator", "cpu"]
PROBE = ["--trainer.callbacks+=tests.tasks.test_ddp_cli.RecordTraining", "--trainer.callbacks.folder=probe"]
EVERY_EPOCH = ["--trainer.check_val_every_n_epoch", "1"]  # the COCO configs validate every 10th
ONE_EPOCH = ["--trainer.max_epochs", "1", *EVERY_EPOCH]
LOADER = ["--data.init_args.num_workers", "0", "--data.init_args.batch_size", "2",
          "--data.init_args.val_batch_size", "2"]
# Every candidate scored, so the few steps' detections reach some boxes (val/mar_100 > 0) for COCOeval to count.
DETECTIONS = ["--model.init_args.post_processing.score_thresh", "0.0",
              "--model.init_args.post_processing.topk_candidates", "300"]
NUM_TRAIN, NUM_VAL = 8, 5  # 2 steps per rank; 3 + 3 val images per rank, one a repeat
UNSYNCED = "It is recommended to use `self.log('val/"  # Lightning's warning for a value it was not told is synced

pytestmark = pytest.mark.usefixtures("one_thread")


class RecordTraining(L.Callback):
    """Writes ``<folder>/rank<r>.json``: per training epoch of this rank, the dataset indices its sampler gave and a
    digest of its augmentation pipeline's random state after the first batch (the child processes of ``ddp`` return
    nothing else to the test)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.epochs: list[dict] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if batch_idx:
            return
        loader = trainer.train_dataloader
        state = [repr(getattr(part.transform, "compose", part.transform).random_generator.bit_generator.state)
                 for part in datasets_in(loader.dataset) if getattr(part, "transform", None) is not None]
        self.epochs.append({"indices": list(loader.sampler),
                            "augmentation": hashlib.sha1("".join(state).encode()).hexdigest()})
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.epochs))


class RecordQuantisers(L.Callback):
    """Writes ``<folder>/qat_rank<r>.json`` at the end of a QAT fit: whether this rank calibrated its activation
    ranges, and digests of its fake quantisers' scales and zero points and of its float weights."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = pl_module.state_dict()

        def digest(keys: list[str]) -> str:
            return hashlib.sha1(b"".join(state[k].cpu().numpy().tobytes() for k in sorted(keys))).hexdigest()

        quantisers = [k for k in state if k.startswith("qat_network.") and k.endswith((".scale", ".zero_point"))]
        weights = [k for k in state if k.startswith("model.") and k.endswith("weight")]
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"qat_rank{trainer.global_rank}.json").write_text(json.dumps({
            "calibrated": bool(pl_module.qat_network.ranges_calibrated), "quantisers": len(quantisers),
            "ranges": digest(quantisers), "weights": digest(weights)}))


def fit_two_processes(folder: Path, launcher: str, *args: str) -> None:
    """``fit <args>`` in two processes, run in ``folder`` (where the configs' relative runs/ land): ``ddp`` as a user
    runs it (``python train_task.py``, whose child process Lightning starts the same way), or ``ddp_fork`` from
    ``cli_main``. No val value may draw Lightning's warning that it is not synchronised over the ranks."""
    if launcher == "ddp":
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, str(ROOT / "train_task.py"), "fit", *args, *TWO_PROCESSES,
                               "--trainer.strategy", "ddp"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert UNSYNCED not in done.stderr, [line for line in done.stderr.splitlines() if UNSYNCED in line]
    else:
        with warnings.catch_warnings():  # the forked ranks inherit the filter: the warning fails their run
            warnings.filterwarnings("error", message=re.escape(UNSYNCED))
            cli_main(["fit", *args, *TWO_PROCESSES, "--trainer.strategy", "ddp_fork"])


def logged_validation(run: Path, epoch: int = 0) -> dict[str, float]:
    """The val/ values of the run's CSV log, which must hold one validation, at ``epoch``."""
    rows = [row for row in csv.DictReader((run / "metrics.csv").open()) if any(row[k] for k in row if "val/" in k)]
    assert [int(row["epoch"]) for row in rows] == [epoch], rows
    return {k: float(v) for k, v in rows[0].items() if k.startswith("val/") and v}


def check_two_process_fit(folder: Path, options: list[str], num_train: int) -> tuple[Path, dict[str, float]]:
    """The checks every task shares; returns the run's ``last.ckpt`` and the values its validation logged."""
    ranks = [json.loads((folder / "probe" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [len(rank) for rank in ranks] == [1, 1]  # one epoch each
    first, second = (rank[0] for rank in ranks)
    assert not set(first["indices"]) & set(second["indices"])  # different images ...
    assert sorted(first["indices"] + second["indices"]) == list(range(num_train))  # ... the whole split once
    assert first["augmentation"] != second["augmentation"]  # and different augmentation draws

    checkpoints = list(folder.rglob("*.ckpt"))
    assert {path.parent for path in checkpoints} == {checkpoints[0].parent}  # one folder, one set of files
    assert sorted(path.name for path in checkpoints)[-1] == "last.ckpt" and len(checkpoints) == 2, checkpoints
    last = checkpoints[0].parent / "last.ckpt"
    logged = logged_validation(last.parent.parent)

    validate = cli_main(["validate", *options, "--trainer.devices", "1", "--trainer.accelerator", "cpu",
                         "--ckpt_path", str(last)])
    single = {name: float(value) for name, value in validate.trainer.callback_metrics.items()}
    assert {"val/loss", "val/map", "val/miou"} & set(logged)
    assert set(logged) == set(single), (sorted(logged), sorted(single))
    for name, value in logged.items():
        assert value == pytest.approx(single[name], abs=1e-5), (name, value, single[name])
    return last, logged


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated shapes in the COCO layout at 96 px, an odd number of val images (read-only)."""
    from mobilenetv2_dense.datasets.detection.shapes import write_shapes_coco

    return write_shapes_coco(tmp_path_factory.mktemp("ddp") / "coco", num_train=NUM_TRAIN, num_val=NUM_VAL,
                             image_size=96, seed=3)


def coco_options(config: str, root: Path) -> list[str]:
    return ["--config", config, "--data.init_args.root", str(root), "--data.init_args.image_size", "96",
            "--data.init_args.pin_memory", "false", *LOADER, "--model.init_args.backbone.width_mult", "0.35",
            *DETECTIONS, *QUIET]


@pytest.mark.slow  # two interpreter start-ups (~10 s on 2 busy cores) for the user's own launcher: ~20 s
def test_detection_fit_in_two_processes_logs_one_process_values_and_resumes(
        coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = coco_options(DET_CONFIG, coco)
    fit_two_processes(tmp_path, "ddp", *options, *ONE_EPOCH, *PROBE)
    last, logged = check_two_process_fit(tmp_path, options, NUM_TRAIN)
    assert {"val/loss", "val/bbox_regression", "val/classification", "val/map", "val/mar_100"} <= set(logged)
    assert logged["val/mar_100"] > 0  # detections for COCOeval to count

    # Resumed in two processes for a second epoch: training goes on from the checkpoint's epoch and step.
    fit_two_processes(tmp_path, "ddp_fork", *options, *EVERY_EPOCH, "--trainer.max_epochs", "2",
                      "--ckpt_path", str(last))
    resumed = next(path for path in tmp_path.rglob("last.ckpt") if path != last)
    steps = torch.load(last, weights_only=False)["global_step"]
    assert torch.load(resumed, weights_only=False)["global_step"] == 2 * steps == 2 * NUM_TRAIN // 4
    assert logged_validation(resumed.parent.parent, epoch=1)  # the second epoch's validation, from epoch 1 only


def test_segmentation_fit_in_two_processes_logs_one_process_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = ["--config", SEG_CONFIG, "--data.init_args.root", str(tmp_path / "voc"),
               "--data.init_args.num_train", str(NUM_TRAIN), "--data.init_args.num_val", str(NUM_VAL),
               "--data.init_args.image_size", "[40, 56]", "--data.init_args.crop_size", "40", *LOADER,
               "--model.init_args.backbone.width_mult", "0.35", *QUIET]  # the config weights Dice: val/dice
    fit_two_processes(tmp_path, "ddp_fork", *options, *ONE_EPOCH, *PROBE)
    _, logged = check_two_process_fit(tmp_path, options, NUM_TRAIN)
    assert {"val/loss", "val/ce", "val/dice", "val/miou", "val/pixel_accuracy"} <= set(logged)


def test_joint_fit_in_two_processes_logs_one_process_values(
        coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    options = [*coco_options(JOINT_CONFIG, coco), "--model.init_args.segmentation_loss.dice_weight", "0.5"]
    fit_two_processes(tmp_path, "ddp_fork", *options, *ONE_EPOCH, *PROBE)
    _, logged = check_two_process_fit(tmp_path, options, NUM_TRAIN)
    assert {"val/loss", "val/detection_loss", "val/segmentation_loss", "val/ce", "val/dice", "val/map",
            "val/miou"} <= set(logged)
    assert logged["val/mar_100"] > 0


def test_qat_fit_in_two_processes_keeps_one_set_of_ranges(
        coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quantisation-aware training under DDP: each rank calibrates its activation ranges at fit start, and the ranks
    end with the same fake quantisers and weights (DDP broadcasts rank 0's buffers) in one checkpoint. (How a QAT
    checkpoint validates is tests/deploy/test_qat.py's; how two ranks' validation adds up, the tests above.)"""
    monkeypatch.chdir(tmp_path)
    options = [*coco_options(DET_CONFIG, coco), "--model.init_args.qat.calibration", "4",
               "--model.init_args.qat.freeze_batchnorm_epoch", "null"]  # BatchNorm statistics train too
    fit_two_processes(tmp_path, "ddp_fork", *options, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
                      "--trainer.callbacks+=tests.tasks.test_ddp_cli.RecordQuantisers",
                      "--trainer.callbacks.folder=probe")
    ranks = [json.loads((tmp_path / "probe" / f"qat_rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["calibrated"] and ranks[0]["quantisers"] > 100
    assert ranks[0] == ranks[1]
    checkpoints = list(tmp_path.rglob("last.ckpt"))
    assert len(checkpoints) == 1 and "qat" in torch.load(checkpoints[0], map_location="cpu", weights_only=True)
