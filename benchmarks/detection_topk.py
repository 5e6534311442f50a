"""How many candidates post-processing should keep: ``topk_candidates`` against AR@100, mAP and time.

    python -m benchmarks.detection_topk --ckpt runs/shapes_detection/csv/version_0/checkpoints/last.ckpt \
        --root data/shapes_coco --image-size 192

Runs the trained network once over the COCO-format val split, keeps its raw outputs, then post-processes them
(scores, per-image top-k over every (anchor, class) pair, decode, per-class NMS, 100 detections) once per
``--topk`` value and scores each with COCOeval. Time is post-processing only, per image, median of
``--repeats`` passes over the whole set. ``DetectionTask.topk_candidates`` and the detection configs take their
default from this table (see the module docstring of ``tasks/detection/module.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.common import print_table
from mobilenetv2_dense.backbone import BackboneSettings
from mobilenetv2_dense.datasets.detection.coco import COCODetection
from mobilenetv2_dense.datasets.detection.dataset import detection_collate
from mobilenetv2_dense.datasets.detection.transforms import eval_transform
from mobilenetv2_dense.heads.anchors import AnchorSettings
from mobilenetv2_dense.heads.loss import SSDLossSettings
from mobilenetv2_dense.heads.postprocess import PostProcessing
from mobilenetv2_dense.models.ssdlite import SSDLite, ssdlite320_mobilenet_v2
from mobilenetv2_dense.tasks.detection.evaluation import detections_to_array, evaluate_coco, scale_to_original


def load_model(ckpt: str) -> tuple[SSDLite, dict]:
    """The ``SSDLite`` of a ``DetectionTask`` checkpoint (eval mode, the task's post-processing settings) and the
    task's hyper-parameters."""
    # A Lightning checkpoint stores its hyper-parameters as Python objects (the Optimization dataclass):
    # load it only from a file you trust.
    hp = dict(torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"])
    backbone = hp.get("backbone") or BackboneSettings()
    width = backbone["width_mult"] if isinstance(backbone, dict) else backbone.width_mult  # a CLI run saves a dict
    model = ssdlite320_mobilenet_v2(num_classes=hp["num_classes"], width_mult=width, weights=ckpt,
                                    post_processing=hp.get("post_processing") or PostProcessing(),
                                    anchors=hp.get("anchors") or AnchorSettings(),
                                    classification=(hp.get("loss") or SSDLossSettings()).classification)
    return model.eval(), hp


@torch.no_grad()
def raw_outputs(model: SSDLite, loader: DataLoader) -> list[tuple[dict, list[dict], tuple[int, int]]]:
    """The network's outputs for every val batch, computed once."""
    batches = []
    for images, targets in loader:
        out = model(images)
        batches.append((out, targets, tuple(images.shape[-2:])))
    return batches


def measure(batches: list, dataset: COCODetection, model: SSDLite, hp: dict, topk: int,
            repeats: int) -> dict[str, float]:
    """COCO metrics, detections per image and post-processing ms per image with ``topk_candidates=topk``."""
    model.post_processing = model.post_processing.replace(topk_candidates=topk)
    times, arrays, image_ids = [], [], []
    for repeat in range(repeats):
        elapsed = 0.0
        for out, targets, input_size in batches:
            start = time.perf_counter()
            detections = model.postprocess(out, input_size)
            elapsed += time.perf_counter() - start
            if repeat == 0:
                ids = [int(t["image_id"]) for t in targets]
                detections = scale_to_original(detections, input_size, [t["orig_size"] for t in targets])
                arrays.append(detections_to_array(detections, ids, dataset.label_to_cat_id))
                image_ids += ids
        times.append(elapsed / len(image_ids))
    metrics = evaluate_coco(dataset.coco, np.concatenate(arrays), image_ids=image_ids, verbose=False)
    num_detections = sum(len(a) for a in arrays)
    return {**metrics, "ms": 1000 * statistics.median(times), "dets": num_detections / len(image_ids)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a DetectionTask checkpoint (.ckpt)")
    parser.add_argument("--root", default="data/shapes_coco", help="COCO-layout folder (val2017/, annotations/)")
    parser.add_argument("--val-images", help="val images folder (default: ROOT/val2017)")
    parser.add_argument("--val-annotations",
                        help="val instances json (default: ROOT/annotations/instances_val2017.json)")
    parser.add_argument("--image-size", type=int, default=320, help="network input side (the demo: 192)")
    parser.add_argument("--topk", default="25,50,100,200,300,400,600,1000,2000",
                        help="comma-separated topk_candidates values")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="post-processing passes timed per value")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    root = Path(args.root)
    dataset = COCODetection(args.val_images or root / "val2017",
                            args.val_annotations or root / "annotations" / "instances_val2017.json",
                            transform=eval_transform(image_size=args.image_size))
    model, hp = load_model(args.ckpt)
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=detection_collate)
    start = time.perf_counter()
    batches = raw_outputs(model, loader)
    print(f"network over {len(dataset)} val images at {args.image_size}: {time.perf_counter() - start:.1f} s; "
          f"{batches[0][0]['anchors'].shape[0]} anchors x {hp['num_classes']} classes per image; "
          f"score_thresh {model.post_processing.score_thresh}, nms_thresh {model.post_processing.nms_thresh}, "
          f"{args.threads} threads")

    rows = []
    for topk in (int(v) for v in args.topk.split(",")):
        m = measure(batches, dataset, model, hp, topk, args.repeats)
        rows.append((topk, f"{m['map']:.4f}", f"{m['map_50']:.4f}", f"{m['mar_100']:.4f}", f"{m['mar_10']:.4f}",
                     f"{m['dets']:.1f}", f"{m['ms']:.2f}"))
    print_table(f"topk_candidates on {len(dataset)} val images ({args.ckpt})", rows,
                ("topk", "mAP", "AP50", "AR@100", "AR@10", "dets/img", "post-proc ms/img"))


if __name__ == "__main__":
    main()
