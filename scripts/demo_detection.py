"""Detection demo (``make demo``): train SSDLite on generated shapes, evaluate with COCOeval, draw predictions.

1. ``fit`` with ``configs/ssdlite_shapes_demo.yaml`` (writes the COCO-layout dataset on first use);
2. ``validate`` the best checkpoint: the COCO metrics table (mAP@[.5:.95], AP50, AP75, small / medium / large);
3. ``predict`` on the folder of val images through ``DetectionPredictionWriter``: pictures with boxes and
   ``predictions.json`` (COCO results); the JSON is scored again against the val annotations, which checks the
   predict path (original pixels, category ids) against the validation numbers; plus ``truth | prediction``
   sheets for a few images.

Every step goes through ``train_task.cli_main``, exactly as ``python train_task.py <step> --config ...`` would.
Extra arguments are LightningCLI overrides for every step, e.g. ``--trainer.max_epochs 2`` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.images import read_rgb
from mobilenetv2_dense.pictures.detection import draw_detections, save_image
from mobilenetv2_dense.tasks.detection import DetectionPredictionWriter
from mobilenetv2_dense.tasks.detection.evaluation import evaluate_coco

ROOT = Path(__file__).resolve().parents[1]

ROWS = (("map", "AP @[.50:.95]"), ("map_50", "AP @.50"), ("map_75", "AP @.75"), ("map_small", "AP small"),
        ("map_medium", "AP medium"), ("map_large", "AP large"), ("mar_100", "AR @100"))


def metrics_table(scores: dict[str, float], prefix: str = "val") -> str:
    lines = [f"  {'metric':<16}{'value':>8}", "  " + "-" * 24]
    for key, name in ROWS:
        value = scores.get(f"{prefix}/{key}")
        if value is not None:
            lines.append(f"  {name:<16}{value:>8.3f}" if value >= 0 else f"  {name:<16}{'n/a':>8}")
    return "\n".join(lines)


def truth_vs_prediction(coco, results: list[dict], images_dir: Path, class_names: list[str],
                        label_of: dict[int, int], out_dir: Path, count: int, score_thresh: float) -> list[Path]:
    """``ground truth | prediction`` JPEGs for the first ``count`` val images."""
    by_image: dict[int, list[dict]] = {}
    for result in results:
        by_image.setdefault(result["image_id"], []).append(result)
    sheets = []
    for image in coco.dataset["images"][:count]:
        pixels = read_rgb(images_dir / image["file_name"])
        halves = []
        for anns, scored in ((coco.imgToAnns[image["id"]], False), (by_image.get(image["id"], []), True)):
            xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
            boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)  # (D, 4) xywh -> xyxy
            labels = torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64)
            scores = torch.tensor([a["score"] for a in anns]) if scored else None
            halves.append(draw_detections(pixels, boxes, labels, scores, class_names=class_names,
                                          score_thresh=score_thresh))
        gap = torch.full((3, pixels.shape[0], 6), 255, dtype=torch.uint8)
        sheets.append(save_image(torch.cat([halves[0], gap, halves[1]], dim=2),
                                 out_dir / Path(image["file_name"]).with_suffix(".jpg").name))
    return sheets


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "ssdlite_shapes_demo.yaml"))
    parser.add_argument("--num-sheets", type=int, default=8, help="val images drawn as truth | prediction")
    args, overrides = parser.parse_known_args(argv)
    sys.argv = sys.argv[:1]  # the overrides reach LightningCLI through `args` only
    common = ["--config", args.config, *overrides]

    start = time.perf_counter()
    fit = cli_main(["fit", *common])
    fit_seconds = time.perf_counter() - start
    checkpoint = fit.trainer.checkpoint_callback
    ckpt = checkpoint.best_model_path or checkpoint.last_model_path
    print(f"\ncheckpoint: {ckpt}")

    validate = cli_main(["validate", *common, "--ckpt_path", ckpt])
    scores = {k: float(v) for k, v in validate.trainer.callback_metrics.items() if k.startswith("val/")}
    data = validate.datamodule

    predict = cli_main(["predict", *common, "--ckpt_path", ckpt, "--data.predict_images", data.paths["val_images"]])
    writers = [c for c in predict.trainer.callbacks if isinstance(c, DetectionPredictionWriter)]
    if not writers:
        raise RuntimeError(f"{args.config} has no DetectionPredictionWriter callback; add it to trainer.callbacks")
    writer = writers[0]
    results = json.loads((writer.output_dir / "predictions.json").read_text())
    rescored = evaluate_coco(data.val_coco, results, verbose=False)
    label_of = {cat: label for label, cat in data.label_to_cat_id.items()}
    sheets = truth_vs_prediction(data.val_coco, results, Path(data.paths["val_images"]), data.class_names,
                                 label_of, Path(predict.trainer.default_root_dir) / "truth_vs_prediction",
                                 args.num_sheets, writer.score_thresh)

    print(f"\nCOCO bbox metrics of {ckpt} on {len(data.val_coco.getImgIds())} val images "
          f"({', '.join(data.class_names)}):")
    print(metrics_table(scores))
    validated = scores.get("val/map", float("nan"))
    agree = np.isclose(rescored["map"], validated, atol=2e-3)
    print(f"\npredictions.json re-scored: mAP {rescored['map']:.3f} (validate: {validated:.3f}; "
          f"{'same' if agree else 'DIFFERENT'})")
    print(f"pictures with predicted boxes: {writer.output_dir.resolve()}")
    print(f"COCO results json:             {(writer.output_dir / 'predictions.json').resolve()}")
    print(f"truth | prediction sheets:     {sheets[0].parent.resolve() if sheets else '-'} ({len(sheets)} images)")
    print(f"wall time: fit {format_seconds(fit_seconds)}, whole demo {format_seconds(time.perf_counter() - start)}")


if __name__ == "__main__":
    main()
