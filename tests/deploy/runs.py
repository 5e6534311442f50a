"""Configs and options of the small runs the export and inference tests train, export and evaluate."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]
DET_CONFIG = str(CONFIGS / "ssdlite_mobilenetv2_coco.yaml")
SEG_CONFIG = str(CONFIGS / "deeplabv3lite_shapes_demo.yaml")
SEG_DATA = ["--data.init_args.num_train", "8", "--data.init_args.num_val", "3", "--data.init_args.image_size",
            "[48, 64]", "--data.init_args.crop_size", "48", "--data.init_args.batch_size", "4",
            "--data.init_args.val_batch_size", "2", "--data.init_args.num_workers", "0"]
# Few candidates keep the unrolled NMS (one step per candidate) quick to export; 3 x the detections, as the default.
DET_POST = ["--model.init_args.post_processing.topk_candidates", "45",
            "--model.init_args.post_processing.detections_per_img", "15"]


def det_data(root: Path) -> list[str]:
    return ["--data.init_args.root", str(root), "--data.init_args.image_size", "96", "--data.init_args.num_workers",
            "0", "--data.init_args.pin_memory", "false", "--data.init_args.batch_size", "4",
            "--data.init_args.val_batch_size", "4"]


CLS_CONFIG = str(CONFIGS / "mobilenetv2_shapes_classification.yaml")
CLS_DATA = ["--data.init_args.images_per_class", "6", "--data.init_args.image_size", "64",
            "--data.init_args.batch_size", "8", "--data.init_args.num_workers", "0"]
