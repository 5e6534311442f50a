"""Segmentation demo (``make demo-seg``): train DeepLabv3-lite on generated shapes, evaluate, draw predictions.

1. ``fit`` with ``configs/deeplabv3lite_shapes_demo.yaml`` (writes the VOC-layout dataset on first use);
2. ``validate`` the best checkpoint at full resolution: mIoU and the per-class IoU table;
3. ``predict`` on a folder of val images through the prediction writer (palette PNGs + overlays), and a
   side-by-side ``image | ground truth | prediction`` sheet per image.

Every step goes through ``train_task.cli_main``, exactly as ``python train_task.py <step> --config ...`` would.
Extra arguments are LightningCLI overrides for every step, e.g. ``--trainer.max_epochs 2`` for a quick look.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.images import read_rgb
from mobilenetv2_dense.datasets.segmentation.voc import find_voc2012, read_list, read_mask
from mobilenetv2_dense.pictures.segmentation import overlay_mask
from mobilenetv2_dense.tasks.segmentation import SegmentationPredictionWriter
from mobilenetv2_dense.tasks.segmentation.metrics import format_iou_table

ROOT = Path(__file__).resolve().parents[1]


def copy_val_images(voc_root: Path, folder: Path, count: int) -> list[str]:
    """Copy the first ``count`` val images to ``folder`` (the predict input); returns their names."""
    voc = find_voc2012(voc_root)
    names = read_list(voc / "ImageSets" / "Segmentation" / "val.txt")[:count]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(voc / "JPEGImages" / f"{name}.jpg", folder / f"{name}.jpg")
    return names


def side_by_side(voc_root: Path, names: list[str], masks_dir: Path, out_dir: Path) -> list[Path]:
    """``image | ground-truth overlay | predicted overlay`` JPEGs, one per name."""
    voc = find_voc2012(voc_root)
    out_dir.mkdir(parents=True, exist_ok=True)
    sheets = []
    for name in names:
        image = read_rgb(voc / "JPEGImages" / f"{name}.jpg")
        truth, _ = read_mask(voc / "SegmentationClass" / f"{name}.png")
        predicted = np.asarray(Image.open(masks_dir / f"{name}.png"))
        gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
        row = np.concatenate([image, gap, overlay_mask(image, truth), gap, overlay_mask(image, predicted)], axis=1)
        path = out_dir / f"{name}.jpg"
        Image.fromarray(row).save(path, quality=92)
        sheets.append(path)
    return sheets


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "deeplabv3lite_shapes_demo.yaml"))
    parser.add_argument("--num-images", type=int, default=8, help="val images to segment and draw")
    args, overrides = parser.parse_known_args(argv)
    common = ["--config", args.config, *overrides]

    start = time.perf_counter()
    fit = cli_main(["fit", *common])
    fit_seconds = time.perf_counter() - start
    checkpoint = fit.trainer.checkpoint_callback
    ckpt = checkpoint.best_model_path or checkpoint.last_model_path
    print(f"\ncheckpoint: {ckpt}")

    validate = cli_main(["validate", *common, "--ckpt_path", ckpt])
    task = validate.model
    scores = {k: float(v) for k, v in validate.trainer.callback_metrics.items() if k.startswith("val/")}

    data = validate.datamodule
    run_dir = Path(validate.trainer.default_root_dir)
    names = copy_val_images(data.root, run_dir / "demo_images", args.num_images)
    predict = cli_main(["predict", *common, "--ckpt_path", ckpt, "--data.predict_images",
                        str(run_dir / "demo_images")])
    writers = [c for c in predict.trainer.callbacks if isinstance(c, SegmentationPredictionWriter)]
    if not writers:
        raise RuntimeError(f"{args.config} has no SegmentationPredictionWriter callback; add it to trainer.callbacks")
    writer = writers[0]
    sheets = side_by_side(data.root, names, writer.output_dir / "masks", run_dir / "side_by_side")

    print(f"\nval mIoU {100 * scores['val/miou']:.2f}, pixel accuracy {100 * scores['val/pixel_accuracy']:.2f} "
          f"({ckpt})")
    print(format_iou_table(task.last_scores["val"]["iou"], data.class_names))
    print(f"\nindex PNGs (VOC palette): {writer.output_dir.resolve() / 'masks'}")
    print(f"overlays:                 {writer.output_dir.resolve() / 'overlays'}")
    print(f"image | truth | predicted: {sheets[0].parent.resolve()} ({len(sheets)} images)")
    print(f"wall time: fit {format_seconds(fit_seconds)}, whole demo {format_seconds(time.perf_counter() - start)}")


if __name__ == "__main__":
    main()
