"""Helpers shared by the benchmarks: timing (warm-up, then the median of interleaved runs), tables, and the options
and result files of the side-by-side learning benchmarks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from mobilenetv2_dense.deploy.timing import median_latency  # noqa: F401  (the benchmarks' import of it)


def print_table(title: str, rows: list[tuple], header: tuple) -> None:
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def suite_options(description: str, argv: list[str] | None) -> tuple[bool, int]:
    """``--quick`` of the one-run benchmark suites, and torch's default thread count before any part changes it."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and images (a smoke run, noisier)")
    return parser.parse_args(argv).quick, torch.get_num_threads()


def run_part(number: int, title: str, part: Callable[[], object]) -> None:
    """Print a suite part's banner, then run it."""
    print(("\n" if number > 1 else "") + "=" * 30, f"{number}. {title}", "=" * 30)
    part()


def learning_options(description: str, *, epochs: int, eval_every: int, num_train: int, num_val: int,
                     data_root: str, channels_last_help: str) -> argparse.ArgumentParser:
    """The options every side-by-side learning benchmark takes (``train_vs_peers``, ``segmentation_vs_peers``);
    each adds its own ``--models`` (and ``--sets``, ``--width_mult``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--eval_every", type=int, default=eval_every)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_train", type=int, default=num_train)
    parser.add_argument("--num_val", type=int, default=num_val)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=True,
                        help=channels_last_help)
    parser.add_argument("--data_root", default=data_root)
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--report", nargs="+", metavar="JSON", help="print tables from saved results and stop")
    return parser


def read_results(paths: list[str]) -> list[dict]:
    """The runs saved by ``--output`` files, in order."""
    return [run for path in paths for run in json.loads(Path(path).read_text())]


def write_results(path: str | None, results: list[dict]) -> None:
    """Save the runs so far (after every model, so an interrupted benchmark keeps what it measured)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=1))
