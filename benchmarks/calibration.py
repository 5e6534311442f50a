"""int8 calibration time: torchao's ``HistogramObserver`` against ``deploy.observers.HistogramObserver``.

    python -m benchmarks.calibration [--model ssdlite|deeplabv3lite] [--width 0.35] [--size 96] [--images 4]

The network of the model (random weights, nothing downloads) goes through ``torch.export`` -> ``prepare_pt2e`` with
XNNPACK's int8 config twice, once with torchao's activation observer and once with the project's
(:func:`mobilenetv2_dense.deploy.observers.xnnpack_config`), both fed the same ``--images`` random images, then
``convert_pt2e``, where each observer searches its range. Prints each conversion's time, the ratio (ours / torchao's),
and whether every activation scale and zero point of the two int8 networks is equal. One torch thread.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from benchmarks.common import print_table
from mobilenetv2_dense.deploy.graph import Network
from mobilenetv2_dense.deploy.observers import xnnpack_config
from mobilenetv2_dense.models import deeplabv3_mobilenet_v2, ssdlite320_mobilenet_v2


def _activation_qparams(network: torch.fx.GraphModule) -> list[tuple[float, int]]:
    return [(float(node.args[1]), int(node.args[2])) for node in network.graph.nodes
            if node.op == "call_function" and str(node.target).endswith("quantize_per_tensor.default")]


def _quantise(network: torch.nn.Module, config, images: list[torch.Tensor]) -> tuple[torch.fx.GraphModule, float]:
    """``network`` int8 by PT2E with ``config``; returns it and the seconds ``convert_pt2e`` took."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with torch.no_grad():
        module = torch.export.export(copy.deepcopy(network), (images[0],)).module()
        prepared = prepare_pt2e(module, XNNPACKQuantizer().set_global(config))
        for image in images:
            prepared(image)
        start = time.perf_counter()
        converted = convert_pt2e(prepared)
    return converted, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

    parser = argparse.ArgumentParser(prog="benchmarks.calibration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("ssdlite", "deeplabv3lite"), default="ssdlite")
    parser.add_argument("--width", type=float, default=0.35)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = (ssdlite320_mobilenet_v2(num_classes=5, width_mult=args.width) if args.model == "ssdlite"
             else deeplabv3_mobilenet_v2(num_classes=5, width_mult=args.width))
    network = Network(model.eval())
    images = [torch.randn(1, 3, args.size, args.size) for _ in range(args.images)]
    torchao, torchao_s = _quantise(network, get_symmetric_quantization_config(is_per_channel=True), images)
    ours, ours_s = _quantise(network, xnnpack_config(), images)
    same = _activation_qparams(torchao) == _activation_qparams(ours)
    activations = len(_activation_qparams(ours))
    print_table(f"{args.model} {args.width} at {args.size} px, {args.images} images, {activations} activation "
                "quantise ops; convert_pt2e (the range searches), 1 thread",
                [("torchao HistogramObserver", f"{torchao_s:.1f}", "1.00"),
                 ("deploy.observers.HistogramObserver", f"{ours_s:.1f}", f"{ours_s / torchao_s:.2f}")],
                ("activation observer", "seconds", "ratio"))
    print(f"same scales and zero points: {same}")
    return {"torchao_s": torchao_s, "ours_s": ours_s, "same": same}


if __name__ == "__main__":
    main()
