"""XNNPACK's int8 quantisation scheme with a faster activation observer.

XNNPACK's quantiser (:func:`xnnpack_config`) observes activations with torchao's ``HistogramObserver``, whose range
search (``_non_linear_param_search``, from caffe2's ``NormMinimization``) narrows the histogram's bounds one step of
1e-5 of its mass at a time (up to 100,000 steps) and reads the cumulative sum as one-element tensors at each step,
once per activation in every ExecuTorch int8 export and every QAT calibration, whatever the number of images.
:class:`HistogramObserver` runs the same search on Python floats and returns the same ranges
(``tests/deploy/test_observers.py`` compares the two; ``python -m benchmarks.calibration`` times both).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torchao.quantization.pt2e import HistogramObserver as _TorchaoHistogramObserver


class HistogramObserver(_TorchaoHistogramObserver):
    """torchao's ``HistogramObserver`` (same histogram, same search, same ``(min, max)``) with the range search on
    Python floats instead of one-element tensors."""

    def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.histogram.size()[0] == self.bins, "bins mismatch"
        bin_width = (self.max_val - self.min_val) / self.bins
        total = torch.sum(self.histogram).item()
        # float32 values, as the reference compares its float32 cumulative sum with float32-rounded bounds
        cumulative = torch.cumsum(self.histogram, dim=0).tolist()

        def as_float32(value: float) -> float:
            return float(np.float32(value))

        stepsize, alpha, beta = 1e-5, 0.0, 1.0
        start_bin, end_bin = 0, self.bins - 1
        norm_min = float("inf")
        while alpha < beta:
            next_alpha, next_beta = alpha + stepsize, beta - stepsize
            low, high = as_float32(next_alpha * total), as_float32(next_beta * total)
            left, right = start_bin, end_bin
            while left < end_bin and cumulative[left] < low:
                left += 1
            while right > start_bin and cumulative[right] > high:
                right -= 1
            next_start_bin, next_end_bin = start_bin, end_bin
            if (left - start_bin) > (end_bin - right):
                next_start_bin, alpha = left, next_alpha
            else:
                next_end_bin, beta = right, next_beta
            if next_start_bin == start_bin and next_end_bin == end_bin:
                continue
            norm = self._compute_quantization_error(next_start_bin, next_end_bin)
            if norm > norm_min:
                break
            norm_min, start_bin, end_bin = norm, next_start_bin, next_end_bin

        new_min = self.min_val + bin_width * start_bin
        new_max = self.min_val + bin_width * (end_bin + 1)
        return new_min, new_max


def xnnpack_config():
    """XNNPACK's symmetric int8 PTQ config (per-channel weights, per-tensor activations), its activations observed by
    :class:`HistogramObserver`; for ``XNNPACKQuantizer().set_global``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True)
    activation = config.input_activation
    faster = dataclasses.replace(activation, observer_or_fake_quant_ctr=HistogramObserver.with_args(
        **activation.observer_or_fake_quant_ctr.p.keywords))
    return dataclasses.replace(config, input_activation=faster, output_activation=faster)
