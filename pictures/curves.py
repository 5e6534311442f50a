"""Training curves from a run's logs: the ``TrainingCurves`` callback (every CLI run has it) and the readers the
``plot`` command (:mod:`mobilenetv2_dense.commands.plot`) uses.

After ``fit``, rank zero writes ``training_curves.png`` into the logger's folder (``CSVLogger`` /
``TensorBoardLogger``: ``save_dir/name/version_N``) and prints its path. The picture is drawn from the files the
logger wrote, not from memory, so the same picture comes back from a run folder later, and for a run still going:

    python -m mobilenetv2_dense plot runs/shapes_detection                 # -> .../version_N/training_curves.png
    python -m mobilenetv2_dense plot runs/shapes_detection --output curves.png

A run folder may hold several logs (``fit`` and every ``validate`` make a ``version_N``): the command plots the
newest one with training scalars (``train/*``), found as ``metrics.csv`` (``CSVLogger``) or
``events.out.tfevents.*`` (``TensorBoardLogger``, read with TensorBoard's ``EventAccumulator``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from .charts import Series, plot_training_curves

CURVES_FILE = "training_curves.png"
_EVENTS = "events.out.tfevents.*"
_SKIPPED = ("step", "hp_metric")  # the CSV's step column; TensorBoardLogger's placeholder hyper-parameter metric


def read_csv_metrics(path: str | Path) -> dict[str, Series]:
    """Every column of a ``CSVLogger`` ``metrics.csv`` as a :class:`Series` against its ``step`` column (a row
    holds only what was logged at that step; empty cells are skipped)."""
    points: dict[str, tuple[list[float], list[float]]] = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "step" not in reader.fieldnames:
            raise ValueError(f"{path}: not a CSVLogger metrics file (no 'step' column in {reader.fieldnames}); "
                             "pass the run folder or the metrics.csv Lightning's CSVLogger wrote")
        for row in reader:
            step = row.get("step")
            if not step:
                continue
            for name, value in row.items():
                if value not in (None, "") and name not in _SKIPPED:
                    steps, values = points.setdefault(name, ([], []))
                    steps.append(float(step))
                    values.append(float(value))
    return {name: Series(np.asarray(s), np.asarray(v)) for name, (s, v) in points.items()}


def read_tensorboard_metrics(folder: str | Path) -> dict[str, Series]:
    """Every scalar of the TensorBoard event files in ``folder`` (``EventAccumulator``, all points kept)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    except ImportError as error:  # pinned in requirements.txt; an install without it can still read CSV logs
        raise ImportError(f"{folder} holds TensorBoard event files, which need the tensorboard package to read: "
                          "pip install tensorboard (requirements.txt pins the tested version)") from error
    accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()["scalars"]:
        if tag in _SKIPPED:
            continue
        events = accumulator.Scalars(tag)
        series[tag] = Series(np.asarray([e.step for e in events], dtype=np.float64),
                             np.asarray([e.value for e in events], dtype=np.float64))
    return series


def read_metrics(source: str | Path) -> dict[str, Series]:
    """The scalars of one log: a ``metrics.csv``, an event file, or a folder holding either directly."""
    source = Path(source)
    if source.is_file():
        return read_csv_metrics(source) if source.suffix == ".csv" else read_tensorboard_metrics(source.parent)
    if (source / "metrics.csv").is_file():
        return read_csv_metrics(source / "metrics.csv")
    if any(source.glob(_EVENTS)):
        return read_tensorboard_metrics(source)
    raise FileNotFoundError(f"{source}: no metrics.csv and no {_EVENTS} file in this folder")


def _has_training(log: Path) -> bool:
    if log.name == "metrics.csv":
        with open(log, newline="") as handle:
            header = next(csv.reader(handle), [])
        return any(name.startswith("train/") for name in header)
    return any(name.startswith("train/") for name in read_metrics(log))


def find_log(run_dir: str | Path) -> Path:
    """The log to plot under ``run_dir``: itself if it is a log (file, or folder holding one), else the newest
    ``metrics.csv`` or TensorBoard folder below it with ``train/*`` scalars."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"plot: {run_dir} does not exist; pass a run folder (e.g. runs/shapes_detection) or "
                                "the metrics.csv / TensorBoard folder of one run")
    if run_dir.is_file() or (run_dir / "metrics.csv").is_file() or any(run_dir.glob(_EVENTS)):
        return run_dir
    logs = [*run_dir.rglob("metrics.csv"), *{p.parent for p in run_dir.rglob(_EVENTS)}]
    logs = sorted(logs, key=lambda p: max(f.stat().st_mtime for f in ([p] if p.is_file() else p.glob(_EVENTS))))
    trained = [log for log in logs if _has_training(log)]
    if not trained:
        found = ", ".join(str(log) for log in logs) or "none"
        raise FileNotFoundError(f"plot: no training log under {run_dir} (metrics.csv or {_EVENTS} with train/* "
                                f"scalars; logs found: {found}); a run's logs are in its logger's save_dir")
    return trained[-1]


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Draw the training curves of the log :func:`find_log` picks; ``output`` defaults to ``training_curves.png``
    beside that log. Returns the path written."""
    log = find_log(run_dir)
    folder = log.parent if log.is_file() else log
    output = Path(output) if output is not None else folder / CURVES_FILE
    folder = folder.resolve()
    shown = folder.relative_to(Path.cwd()) if folder.is_relative_to(Path.cwd()) else folder  # same title either way
    return plot_training_curves(read_metrics(log), output, title=str(shown))


class TrainingCurves(L.Callback):
    """Writes ``training_curves.png`` (:func:`plot_run`) into the logger's log dir when ``fit`` ends, on rank zero.

    ``commands/cli.py`` adds it to every run the CLI starts, as a trainer default, so it runs beside the callbacks a
    config lists. Runs without a ``CSVLogger`` or ``TensorBoardLogger`` get a line saying why there is no picture.
    """

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        logger = next((lg for lg in trainer.loggers if isinstance(lg, (CSVLogger, TensorBoardLogger))), None)
        if logger is None:
            if trainer.loggers:
                rank_zero_info("TrainingCurves: no training_curves.png: the curves are drawn from a CSVLogger or "
                               "TensorBoardLogger log, and this run has neither")
            return
        logger.save()  # the loggers flush at teardown, after on_fit_end: write what is pending now
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.flush()
        try:
            path = plot_run(logger.log_dir)
        except FileNotFoundError as error:  # e.g. a run too short to log a training step
            rank_zero_info(f"TrainingCurves: no training_curves.png ({error})")
            return
        except Exception as error:  # noqa: BLE001 (a picture must not fail a finished training)
            rank_zero_warn(f"TrainingCurves: drawing {logger.log_dir}/{CURVES_FILE} failed ({type(error).__name__}: "
                           f"{error}); the run itself is complete. Draw it later with: python -m mobilenetv2_dense "
                           f"plot {logger.log_dir}")
            return
        rank_zero_info(f"Training curves: {path}")
