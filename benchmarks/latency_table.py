"""The paper's Figure 5 on this machine: latency and MAdds over width multiplier x input size, eager and deployed.

    python -m benchmarks.latency_table [--runs 10] [--threads 1] [--output runs/latency_table]

For each network (random weights, batch 1, median of ``--runs`` interleaved calls) and each width in
{0.35, 0.5, 0.75, 1.0, 1.4} and input size (classifier 96-224, SSDLite 192-320, DeepLabv3-lite 256-512):
MAdds (``backbone/complexity.py``, the paper's count), eager latency (the model floor, Conv+BN folded) and ONNX
Runtime latency in fp32 and int8 (one export per width with H and W dynamic; int8 as ``export.py --int8``
quantises, calibrated on random images, which sets its speed, not its accuracy): int8 ONNX Runtime is the fastest
format for these networks in ``benchmarks/deploy.py``. SSDLite is timed as its network plus the eager
post-processing (decoding and class-wise NMS of ``SSDLite.postprocess``), since its exported graph with NMS is
fixed to one input size. Writes ``latency_table.md`` (a markdown table) and ``latency_table.png`` (latency
(int8) against MAdds, one line per width, as the paper's Figure 5) under ``--output``, so a user picks the width and
resolution that fit a latency budget.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import median_latency
from mobilenetv2_dense.backbone.complexity import count_madds
from mobilenetv2_dense.deploy.formats import export_graph
from mobilenetv2_dense.deploy.fuse import fold_conv_bn
from mobilenetv2_dense.deploy.quantize import QUANTISED_OPS, QUANTISED_OPS_DENSE, quantize_onnx
from mobilenetv2_dense.deploy.runtime import DeployedModel, write_sidecar
from mobilenetv2_dense.models import deeplabv3_mobilenet_v2, mobilenet_v2_classifier, ssdlite320_mobilenet_v2

WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.4)
SIZES = {"classifier": (96, 128, 160, 192, 224), "ssdlite": (192, 224, 256, 288, 320),
         "deeplabv3-lite": (256, 320, 384, 448, 512)}


class Network(nn.Module):
    """The network alone, as one tensor output (or a tuple) for ONNX: logits, SSDLite's (regression, logits)."""

    def __init__(self, name: str, model: nn.Module) -> None:
        super().__init__()
        self.name, self.model = name, model

    def forward(self, images: torch.Tensor):
        if self.name == "ssdlite":
            out = self.model.head(self.model.backbone(images))
            return out["bbox_regression"], out["cls_logits"]
        return self.model(images)["logits" if self.name == "classifier" else "out"]


def build(name: str, width: float) -> nn.Module:
    if name == "classifier":
        return mobilenet_v2_classifier(num_classes=1000, width_mult=width).eval()
    if name == "ssdlite":
        return ssdlite320_mobilenet_v2(num_classes=80, width_mult=width).eval()
    return deeplabv3_mobilenet_v2(num_classes=21, width_mult=width, head="lite").eval()


def measure(name: str, width: float, sizes: tuple[int, ...], runs: int, threads: int, folder: Path) -> list[dict]:
    torch.manual_seed(0)
    model = build(name, width)
    folded = fold_conv_bn(model)
    network = Network(name, folded).eval()
    outputs = ["regression", "logits"] if name == "ssdlite" else ["logits"]
    path, _ = export_graph(network, torch.rand(2, 3, sizes[-1], sizes[-1]), folder / f"{name}_{width}.onnx",
                           format="onnx", output_names=outputs, dynamic_size=True,
                           min_size=64 if name == "classifier" else 32)
    calibration = [torch.rand(2, 3, size, size) for size in sizes[-2:]]
    int8_path = quantize_onnx(path, folder / f"{name}_{width}.int8.onnx", calibration,
                              op_types=QUANTISED_OPS if name == "ssdlite" else QUANTISED_OPS_DENSE)
    for file in (path, int8_path):  # the least a DeployedModel reads
        write_sidecar(file, {"task": name, "outputs": [{"name": o} for o in outputs], "classes": []})
    runtimes = {"onnx": DeployedModel(path, threads=threads), "int8": DeployedModel(int8_path, threads=threads)}
    rows = []
    for size in sizes:
        image = torch.rand(1, 3, size, size)
        if name == "ssdlite":
            anchors = folded(image)["anchors"]

            def eager(m=folded, x=image):
                return m.predict(x)

            def runtime(kind, x=image, a=anchors):
                regression, logits = runtimes[kind](x).values()
                return folded.postprocess({"bbox_regression": regression, "cls_logits": logits, "anchors": a},
                                          tuple(x.shape[-2:]))
        else:
            def eager(m=network, x=image):
                return m(x)

            def runtime(kind, x=image):
                return runtimes[kind](x)
        torch.set_num_threads(threads)
        timings = median_latency({"eager": eager, "onnx": lambda r=runtime: r("onnx"),
                                  "int8": lambda r=runtime: r("int8")}, runs=runs, warmup=2)
        rows.append({"model": name, "width": width, "size": size,
                     "madds_m": count_madds(model, (size, size)) / 1e6,
                     "eager_ms": timings["eager"] * 1e3, "onnx_ms": timings["onnx"] * 1e3,
                     "int8_ms": timings["int8"] * 1e3})
    return rows


def write(rows: list[dict], output: Path, threads: int, runs: int) -> None:
    output.mkdir(parents=True, exist_ok=True)
    lines = [f"Batch 1, {threads} thread(s), median of {runs}; eager = Conv+BN folded PyTorch; ONNX Runtime fp32 and "
             "int8 (SSDLite: network + eager post-processing).", "",
             "| model | width | input | MAdds (M) | eager ms | ONNX Runtime fp32 ms | ONNX Runtime int8 ms |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['width']} | {r['size']} | {r['madds_m']:.0f} | {r['eager_ms']:.1f} | "
              f"{r['onnx_ms']:.1f} | {r['int8_ms']:.1f} |" for r in rows]
    (output / "latency_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.2), squeeze=False)
    for axis, model in zip(axes[0], models):
        for width in WIDTHS:
            points = [r for r in rows if r["model"] == model and r["width"] == width]
            if points:
                axis.plot([p["madds_m"] for p in points], [p["int8_ms"] for p in points], "o-", label=f"{width}")
                for p in points:
                    axis.annotate(str(p["size"]), (p["madds_m"], p["int8_ms"]), fontsize=6)
        axis.set(title=f"{model} (ONNX Runtime int8)", xlabel="MAdds (millions)", ylabel="ms, batch 1",
                 xscale="log", yscale="log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(title="width", fontsize=7)
    figure.tight_layout()
    figure.savefig(output / "latency_table.png", dpi=120)
    print(f"\nwrote {output / 'latency_table.md'} and {output / 'latency_table.png'}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--widths", nargs="+", type=float, default=list(WIDTHS))
    parser.add_argument("--output", default="runs/latency_table")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            for width in args.widths:
                rows += measure(name, width, SIZES[name], args.runs, args.threads, Path(folder))
                print(f"{name} width {width}: " + ", ".join(f"{r['size']} {r['int8_ms']:.1f} ms" for r in rows[-5:]),
                      flush=True)
    write(rows, Path(args.output), args.threads, args.runs)
    return rows


if __name__ == "__main__":
    main()
