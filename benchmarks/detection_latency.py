"""End-to-end SSDLite latency on the CPU, batch 1 at 320x320: ours vs torchvision's ssdlite320_mobilenet_v3_large.

    python -m benchmarks.detection_latency [--runs 30] [--threads 1]

Both models are randomly initialised (nothing downloads), in eval mode under ``torch.inference_mode``, and
timed in the same process with calls interleaved (warm-up, then the median of ``--runs``). "network" is the
backbone and head; "end-to-end" adds decoding, score threshold, top-k and per-class NMS (and, for torchvision,
its built-in normalise + resize transform, which our data module does before the model). Post-processing
settings are made equal (score 0.01, NMS IoU 0.45, 400 candidates, 100 detections, 80 classes + background).
Untrained scores are near-uniform, so nearly every candidate passes the threshold: NMS sees its worst case.
A ratio below 1.0 means ours is faster. The paper's figure is 200 ms on one Pixel 1 core (Table 6).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from benchmarks.common import median_latency, print_table
from mobilenetv2_dense.backbone.complexity import count_parameters
from mobilenetv2_dense.heads.postprocess import PostProcessing, postprocess_detections
from mobilenetv2_dense.models.ssdlite import ssdlite320_mobilenet_v2

SETTINGS = PostProcessing(score_thresh=0.01, nms_thresh=0.45, topk_candidates=400, detections_per_img=100)


def build_models(num_classes: int = 80) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ours = ssdlite320_mobilenet_v2(num_classes=num_classes).eval()
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes + 1).eval()
    for name, value in dataclasses.asdict(SETTINGS).items():
        setattr(theirs, name, value)  # torchvision applies topk per class; ours per image over all classes
    return ours, theirs


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per contender (median reported)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (Pixel 1 figure: 1 core)")
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ours, theirs = build_models()
    image = torch.rand(1, 3, args.size, args.size)
    image_size = (args.size, args.size)

    def ours_end_to_end() -> list[dict]:
        out = ours(image)
        return postprocess_detections(out["bbox_regression"], out["cls_logits"], out["anchors"], ours.box_coder,
                                      image_size=image_size, settings=SETTINGS)

    def theirs_network() -> dict:
        return theirs.head(list(theirs.backbone(image).values()))

    timings = median_latency({
        "ours network": lambda: ours(image),
        "theirs network": theirs_network,
        "ours end-to-end": ours_end_to_end,
        "theirs end-to-end": lambda: theirs([image[0]]),
    }, runs=args.runs, warmup=args.warmup)

    rows = []
    for name, model in (("ours: MobileNetV2 + SSDLite", ours), ("torchvision: MobileNetV3-L + SSDLite", theirs)):
        key = "ours" if name.startswith("ours") else "theirs"
        rows.append((name, f"{count_parameters(model) / 1e6:.2f}M", f"{timings[f'{key} network'] * 1e3:.1f}",
                     f"{timings[f'{key} end-to-end'] * 1e3:.1f}"))
    rows.append(("ratio ours / theirs", "", f"{timings['ours network'] / timings['theirs network']:.2f}",
                 f"{timings['ours end-to-end'] / timings['theirs end-to-end']:.2f}"))
    print_table(f"SSDLite batch-1 latency at {args.size}x{args.size}, {args.threads} thread(s), median of {args.runs}",
                rows, ("model", "params", "network ms", "end-to-end ms"))
    return timings


if __name__ == "__main__":
    main()
