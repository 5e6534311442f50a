"""Timing helpers shared by the benchmarks: warm-up, then the median of interleaved runs."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def median_latency(fns: dict[str, Callable[[], object]], *, runs: int = 30, warmup: int = 5) -> dict[str, float]:
    """Median seconds per call of each function. Calls are interleaved (a, b, a, b, ...) so that a
    machine getting busier or cooler during the run affects every contender alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for _ in range(runs):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


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
