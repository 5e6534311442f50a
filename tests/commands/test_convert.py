"""The ``convert`` command: a config's data written as YOLO, COCO or VOC files and read back by that format's data
module with the same boxes, classes and crowd / difficult flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mobilenetv2_dense.__main__ import main
from mobilenetv2_dense.datasets.detection import COCODetection, YOLODetection
from mobilenetv2_dense.tasks.detection import COCODataModule, VOCDetectionDataModule
from tests.datasets.test_detection_yolo import write_yolo

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = ["--model.init_args.backbone.width_mult", "0.35"]


def same_boxes(a, b, atol: float = 1e-3) -> None:
    """Two checked indices hold the same images' boxes, labels and flags, in the same order."""
    assert [Path(f).stem for f in a.files] == [Path(f).stem for f in b.files]
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=atol)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_yolo_to_coco_keeps_boxes_and_the_yaml_class_ids(tmp_path: Path) -> None:
    data_yaml = write_yolo(tmp_path / "yolo")
    output = tmp_path / "coco"
    main(["convert", "--config", str(CONFIGS / "ssdlite_mobilenetv2_yolo.yaml"), "--data.init_args.data_yaml",
          str(data_yaml), *SMALL, "--to", "coco", "--output", str(output)])
    datamodule = COCODataModule(str(output), num_workers=0)
    assert datamodule.label_to_cat_id == {1: 0, 2: 3, 3: 7} and datamodule.class_names == ["green", "blue", "red"]
    for split in ("train", "val"):
        same_boxes(YOLODetection(data_yaml, split).index, datamodule.make_dataset(split, None).index)
    with pytest.raises(FileExistsError, match="is not empty; pass a new folder"):
        main(["convert", "--config", str(CONFIGS / "ssdlite_mobilenetv2_yolo.yaml"), "--data.init_args.data_yaml",
              str(data_yaml), *SMALL, "--to", "coco", "--output", str(output)])


def test_coco_to_yolo_reads_back_with_contiguous_class_ids(shapes_coco: Path, tmp_path: Path) -> None:
    output = tmp_path / "yolo"
    main(["convert", "--config", str(CONFIGS / "ssdlite_mobilenetv2_coco.yaml"), "--data.init_args.root",
          str(shapes_coco), *SMALL, "--to", "yolo", "--output", str(output)])
    coco = COCODetection(shapes_coco / "val2017", shapes_coco / "annotations" / "instances_val2017.json")
    yolo = YOLODetection(output / "data.yaml", "val")
    assert yolo.class_names == coco.class_names and yolo.label_to_cat_id == {1: 0, 2: 1, 3: 2, 4: 3}
    same_boxes(coco.index, yolo.index)
    assert (output / "labels" / "train").is_dir() and (output / "images" / "train").is_dir()


def test_voc_to_voc_and_coco_keep_difficult_objects(voc_root: Path, tmp_path: Path) -> None:
    voc = ["--config", str(CONFIGS / "ssdlite_mobilenetv2_voc.yaml"), "--data.init_args.root", str(voc_root),
           "--data.init_args.train_sets", "[VOC2012/train]", "--data.init_args.val_set", "VOC2012/val", *SMALL]
    main(["convert", *voc, "--to", "voc", "--output", str(tmp_path / "voc")])
    main(["convert", *voc, "--to", "coco", "--output", str(tmp_path / "coco")])
    source = VOCDetectionDataModule(str(voc_root), train_sets=["VOC2012/train"], val_set="VOC2012/val")
    written = VOCDetectionDataModule(str(tmp_path / "voc"), train_sets=["VOC/train"], val_set="VOC/val")
    coco = COCODataModule(str(tmp_path / "coco"))
    for split in ("train", "val"):
        original = source.make_dataset(split, None).index
        for copy in (written.make_dataset(split, None).index, coco.make_dataset(split, None).index):
            same_boxes(original, copy)
            np.testing.assert_array_equal(original.ignore, copy.ignore)  # difficult -> difficult, iscrowd
        assert original.ignore.any()
