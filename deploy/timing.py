"""Latency as the benchmarks and the ``benchmark`` command measure it: a warm-up, then the median of interleaved
calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_latency(fns: dict[str, Callable[[], object]], *, runs: int = 30, warmup: int = 5) -> dict[str, float]:
    """Median seconds per call of each function. Calls are interleaved (a, b, a, b, ...) so that a machine getting
    busier or cooler during the run affects every contender alike."""
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
