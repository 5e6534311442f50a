"""Pictures of training and evaluation, for any task: training curves, precision-recall curves, confusion matrices
and per-class IoU bars, each written as a PNG by plain matplotlib (the Agg canvas, no pyplot state).

Each ``plot_*`` function takes numbers (numpy arrays or tensors), draws them and returns the path it wrote; the
numbers a picture shows come from a function here that tests can check (:func:`pr_curves`,
:func:`normalize_rows`, :func:`training_panels`). Who calls them: :mod:`.curves` (after ``fit``, and the
``plot`` command), the detection and segmentation evaluators under ``validate`` and ``test``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# COCOeval's default IoU thresholds, the T axis of its accumulated precision: 0.50, 0.55, ..., 0.95.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
_ANNOTATE_UP_TO = 25  # a confusion matrix writes its numbers in the cells up to this many rows


class Series(NamedTuple):
    """One logged scalar: ``steps (P,)`` (global step at logging time) and ``values (P,)``."""

    steps: np.ndarray
    values: np.ndarray


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)  # draws without a display and without touching pyplot's global backend
    return figure


def _save(figure: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100, pil_kwargs={"compress_level": 1})  # zlib's fastest: half the time, +25% bytes
    return path


def _numpy(values: Any, dtype: type = np.float64) -> np.ndarray:
    if hasattr(values, "detach"):  # a tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


# ----------------------------------------------------------------------------------------------- detection
def pr_curves(precision: Any, iou_thresholds: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Per-class precision-recall curves from COCOeval's accumulated ``eval["precision"]``.

    Args:
        precision: ``(T, R, K, A, M)``: IoU thresholds x 101 recall points x classes x area ranges x maxDets, ``-1``
            where a class has no ground truth. Area range 0 (``all``) and the last maxDets (100) are read.
        iou_thresholds: the T thresholds (COCO's 0.50:0.05:0.95 when ``None``).

    Returns:
        ``recall (R,)``, ``precision_50 (K, R)`` at IoU 0.5, ``precision (K, R)`` averaged over the T thresholds,
        ``ap_50 (K,)`` and ``ap (K,)`` (their means over recall: COCO's per-class AP50 and AP@[.5:.95]); ``nan`` for
        a class without ground truth.
    """
    precision = _numpy(precision)
    if precision.ndim != 5:
        raise ValueError(f"pr_curves: precision must be COCOeval's (T, R, K, A, M) eval['precision'], got shape "
                         f"{precision.shape}")
    thresholds = COCO_IOU_THRESHOLDS if iou_thresholds is None else np.asarray(iou_thresholds, dtype=np.float64)
    if len(thresholds) != precision.shape[0]:
        raise ValueError(f"pr_curves: {len(thresholds)} IoU thresholds for a precision array of {precision.shape[0]};"
                         " pass evaluator.params.iouThrs")
    at = np.flatnonzero(np.isclose(thresholds, 0.5))
    if not len(at):
        raise ValueError(f"pr_curves: IoU 0.5 is not among the thresholds {thresholds.tolist()}")
    curves = np.where(precision[:, :, :, 0, -1] < 0, np.nan, precision[:, :, :, 0, -1])  # (T, R, K)
    with _quiet_nan_warnings():
        mean = np.nanmean(curves, axis=0).T  # (K, R); a class without ground truth is -1 at every T
        at_50 = curves[at[0]].T  # (K, R)
        return {"recall": np.linspace(0, 1, precision.shape[1]), "precision_50": at_50, "precision": mean,
                "ap_50": np.nanmean(at_50, axis=1), "ap": np.nanmean(mean, axis=1)}


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": classes without ground truth
        yield


def plot_pr_curves(precision: Any, class_names: Sequence[str], path: str | Path, *,
                   iou_thresholds: Sequence[float] | None = None, title: str = "precision-recall") -> Path:
    """Two panels, IoU 0.5 and the mean over IoU 0.5:0.95: one thin curve per class and the mean over classes
    (bold), AP in the legend (area all, 100 detections per image). Data: :func:`pr_curves`."""
    curves = pr_curves(precision, iou_thresholds)
    if len(class_names) != curves["ap"].shape[0]:
        raise ValueError(f"plot_pr_curves: {len(class_names)} class names for {curves['ap'].shape[0]} classes in the "
                         "precision array; give one name per category, in COCOeval's params.catIds order")
    figure = _figure(12, 5.2)
    for index, (key, ap_key, label) in enumerate((("precision_50", "ap_50", "IoU 0.5"),
                                                  ("precision", "ap", "IoU 0.5:0.95 (mean)"))):
        axis = figure.add_subplot(1, 2, index + 1)
        present = ~np.isnan(curves[ap_key])
        many = present.sum() > 20
        for name, curve, ap in zip(class_names, curves[key][present], curves[ap_key][present]):
            axis.plot(curves["recall"], curve, linewidth=0.8, alpha=0.5 if many else 0.9,
                      label=None if many else f"{name} {ap:.3f}")
        if present.any():
            with _quiet_nan_warnings():
                axis.plot(curves["recall"], np.nanmean(curves[key][present], axis=0), color="black", linewidth=2.5,
                          label=f"all classes {np.nanmean(curves[ap_key]):.3f}")
        axis.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"{title}, {label}")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7, loc="lower left", title="AP")
    return _save(figure, path)


# ----------------------------------------------------------------------------------------------- confusion
def normalize_rows(matrix: Any) -> np.ndarray:
    """Each row divided by its sum (rows = true class: the share of that class predicted as each column); an empty
    row stays 0."""
    matrix = _numpy(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def plot_confusion_matrix(matrix: Any, names: Sequence[str], path: str | Path, *, normalize: bool = True,
                          title: str = "confusion matrix") -> Path:
    """A ``(C, C)`` confusion matrix, rows = true class, columns = predicted class, as a heat map.

    Colours are row shares (:func:`normalize_rows`) when ``normalize``, else counts; up to 25 classes every cell
    also shows its count (and share). ``names`` label rows and columns (a detection matrix's last one is
    ``"background"``).
    """
    counts = _numpy(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(names):
        raise ValueError(f"plot_confusion_matrix: a square matrix with one row per name is needed, got shape "
                         f"{counts.shape} for {len(names)} names")
    shown = normalize_rows(counts) if normalize else counts
    size = len(names)
    side = float(np.clip(2.5 + 0.35 * size, 5, 16))  # COCO's 81 rows: 0.2 inch each
    figure = _figure(side + 1.2, side)
    axis = figure.add_subplot(1, 1, 1)
    image = axis.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1.0, float(shown.max())),
                        interpolation="nearest")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the row" if normalize else "count")
    ticks = np.arange(size)
    font = 8 if size <= 12 else 7 if size <= 25 else 6 if size <= 40 else 4
    axis.set_xticks(ticks, labels=list(names), rotation=90, fontsize=font)
    axis.set_yticks(ticks, labels=list(names), fontsize=font)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    if size <= _ANNOTATE_UP_TO:
        rows, cols = np.nonzero(counts)  # only the non-empty cells: an 81-class grid of zeros is noise
        for r, c in zip(rows.tolist(), cols.tolist()):
            text = _compact(counts[r, c]) + (f"\n{shown[r, c]:.2f}" if normalize else "")
            axis.text(c, r, text, ha="center", va="center", fontsize=max(4, font - 1),
                      color="white" if shown[r, c] > 0.6 * (1 if normalize else shown.max()) else "black")
    return _save(figure, path)


def _compact(count: float) -> str:
    """``7`` -> ``"7"``, ``35210`` -> ``"35k"``, ``1.2e8`` -> ``"120M"``: pixel counts fit in a cell."""
    if count >= 1e9:
        return f"{count / 1e9:.3g}G"
    if count >= 1e6:
        return f"{count / 1e6:.3g}M"
    if count >= 1e4:
        return f"{count / 1e3:.0f}k"
    return f"{count:.0f}"


# ----------------------------------------------------------------------------------------------- segmentation
def plot_iou_bars(iou: Any, names: Sequence[str], path: str | Path, *, title: str = "IoU per class") -> Path:
    """One horizontal bar per class (IoU in percent, ``nan``: absent from the split, drawn as ``-``) and the mean
    over the present classes as a dashed line."""
    values = _numpy(iou) * 100
    if values.shape != (len(names),):
        raise ValueError(f"plot_iou_bars: {len(names)} names for IoU of shape {values.shape}; one name per class")
    figure = _figure(7, max(2.5, 0.8 + 0.32 * len(names)))
    axis = figure.add_subplot(1, 1, 1)
    rows = np.arange(len(names))
    axis.barh(rows, np.nan_to_num(values), color="tab:blue")
    for row, value in zip(rows, values):
        axis.text(min(np.nan_to_num(value), 100) + 1, row, "-" if np.isnan(value) else f"{value:.1f}", va="center",
                  fontsize=7)
    present = ~np.isnan(values)
    if present.any():
        mean = float(values[present].mean())
        axis.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.1f}")
        axis.legend(fontsize=7, loc="lower right")
    axis.set_yticks(rows, labels=list(names), fontsize=8)
    axis.invert_yaxis()  # first class on top, as in the printed table
    axis.set(xlim=(0, 108), xlabel="IoU (%)", title=title)
    axis.grid(True, axis="x", alpha=0.3)
    return _save(figure, path)


# ----------------------------------------------------------------------------------------------- training
def training_panels(series: Mapping[str, Series]) -> dict[str, dict[str, Series]]:
    """Which logged scalars go into which panel of :func:`plot_training_curves`.

    ``"loss"``: every ``train/*`` scalar at step level (Lightning's ``<name>_step`` over ``<name>_epoch``, the
    suffix dropped) and ``val/*loss*``; ``"learning rate"``: ``LearningRateMonitor``'s ``lr-<optimizer>[/pg<i>]``;
    ``"validation"``: the other ``val/*`` scalars (``val/map*``, ``val/miou``, ``val/acc1``, ...), COCO's ``-1``
    (no ground truth in that area range) left out. Panels with nothing are absent.
    """
    loss: dict[str, Series] = {}
    rate: dict[str, Series] = {}
    quality: dict[str, Series] = {}
    for name, values in series.items():
        if not len(values.steps):
            continue
        if name.startswith("train/"):
            if name.endswith("_epoch") and f"{name[:-6]}_step" in series:
                continue  # the epoch mean of a scalar also logged per step
            loss[name.removesuffix("_step")] = values
        elif name.startswith("val/") and "loss" in name:
            loss[name] = values
        elif name.startswith("lr-") and not name.endswith(("-momentum", "-weight_decay")):
            rate[name.removeprefix("lr-")] = values
        elif name.startswith("val/"):
            keep = values.values >= 0
            if keep.any():
                quality[name] = Series(values.steps[keep], values.values[keep])
    panels = {"loss": loss, "learning rate": rate, "validation": quality}
    return {title: dict(sorted(entries.items())) for title, entries in panels.items() if entries}


def epoch_starts(epochs: Series | None) -> np.ndarray:
    """The steps at which the logged ``epoch`` scalar goes up: where a new epoch starts."""
    if epochs is None or len(epochs.steps) < 2:
        return np.zeros(0)
    order = np.argsort(epochs.steps, kind="stable")
    steps, values = epochs.steps[order], epochs.values[order]
    return steps[1:][np.diff(values) > 0]


def plot_training_curves(series: Mapping[str, Series], path: str | Path, *, title: str = "") -> Path:
    """Losses, learning rate and validation metrics against the global step (panels: :func:`training_panels`).

    Step-level scalars are lines; epoch-level ones (validation) are logged at the step their epoch ended and drawn
    as points joined by lines on the same step axis. Dotted verticals mark where epochs start (up to 50 epochs).
    """
    from matplotlib.ticker import MaxNLocator

    panels = training_panels(series)
    figure = _figure(5.2 * max(1, len(panels)), 4.4)
    starts = epoch_starts(series.get("epoch"))
    for index, (panel, entries) in enumerate(panels.items() or {"nothing logged": {}}.items()):
        axis = figure.add_subplot(1, max(1, len(panels)), index + 1)
        for name, (steps, values) in entries.items():
            order = np.argsort(steps, kind="stable")
            points = len(steps) <= 30 or not name.startswith("train/")
            axis.plot(steps[order], values[order], marker="o" if points else None, markersize=3, linewidth=1.2,
                      label=name)
        if len(starts) <= 50:
            for step in starts:
                axis.axvline(step, color="gray", linestyle=":", linewidth=0.6)
        values = np.concatenate([v.values for v in entries.values()]) if entries else np.zeros(0)
        if panel != "validation" and len(values) and values.min() > 0 and values.max() / values.min() > 20:
            axis.set_yscale("log")  # losses from scratch and warm-up lrs span decades
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        axis.set(xlabel="step", title=panel)
        axis.grid(True, alpha=0.3)
        if entries:
            axis.legend(fontsize=7)
        else:
            axis.text(0.5, 0.5, "no losses, lr or validation metrics logged", ha="center", transform=axis.transAxes)
    if title:
        figure.suptitle(title, fontsize=9)
    return _save(figure, path)


def evaluation_folder(trainer: Any) -> Path | None:
    """``<log dir>/<validate|test>``: where an evaluation command's pictures go, next to the metrics it logs;
    ``None`` for a run without a logger (``logger: false`` writes no files, pictures included).

    The log dir is the first logger's (``CSVLogger`` / ``TensorBoardLogger``: ``save_dir/name/version_N``; another
    logger: its ``save_dir``, else ``default_root_dir``): ``Trainer.log_dir``'s rule without its broadcast, so rank
    zero alone may call it.
    """
    if not trainer.loggers:
        return None
    logger = trainer.loggers[0]
    folder = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) or trainer.default_root_dir
    return Path(folder) / str(getattr(trainer.state.fn, "value", trainer.state.fn))
