"""How the datasets hold their records: a few numpy arrays rather than a Python object per sample, so forked loader
workers share them however often they read them (``benchmarks/memory.py`` measures it), and COCO's json as Python
objects only where something reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilenetv2_dense.datasets.detection.coco import COCODetection
from mobilenetv2_dense.datasets.joint import COCOJoint
from mobilenetv2_dense.datasets.segmentation.dataset import SegmentationDataset
from mobilenetv2_dense.datasets.segmentation.shapes import write_shapes_voc
from mobilenetv2_dense.datasets.segmentation.voc import voc_samples


def test_segmentation_samples_are_string_arrays_read_back_as_samples(tmp_path: Path) -> None:
    voc = write_shapes_voc(tmp_path, num_train=3, num_val=1, image_size=48)
    samples = voc_samples(voc, "trainval")
    dataset = SegmentationDataset(samples, None, num_classes=5, name="shapes")
    table = dataset.samples
    assert all(isinstance(column, np.ndarray) and column.dtype.kind == "U"
               for column in (table.names, table.images, table.masks))
    assert len(table) == 4 and table[3] == samples[3] and list(table) == samples


def test_coco_training_split_keeps_only_its_index(good_coco: Path) -> None:
    dataset = COCODetection(good_coco.parent / "images", good_coco)
    assert "coco" not in vars(dataset)  # the set-up's COCO object is gone
    assert sorted(dataset.coco.getImgIds()) == [10, 20, 30, 40, 50, 60]  # read again when asked for (evaluation)
    assert dataset.coco is dataset.coco
    joint = COCOJoint(good_coco.parent / "images", good_coco)
    assert "coco" in vars(joint)  # its masks are drawn from the annotations, per sample
