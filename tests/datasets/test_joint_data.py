"""Joint detection + segmentation data: COCO outlines to semantic masks against pycocotools (polygons, RLE, crowds),
broken outlines, VOC pairing, and image / boxes / mask augmented together."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mobilenetv2_dense.datasets.checks import DatasetError, DatasetWarning
from mobilenetv2_dense.datasets.detection.transforms import DetectionAugment
from mobilenetv2_dense.datasets.joint import (
    COCOJoint,
    VOCJoint,
    joint_eval_transform,
    joint_train_transform,
    outline_problem,
    paired_names,
)
from mobilenetv2_dense.datasets.segmentation.voc import save_palette_png
from tests.conftest import BLUE, CATEGORIES, GREEN, RED, scene, write_coco_json

H, W = 40, 50
CAT_LABEL = {c["id"]: label for label, c in enumerate(CATEGORIES, start=1)}  # ids 2, 5, 11 -> labels 1, 2, 3


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's crowd form: run lengths in column-major order, starting with a run of zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _annotations() -> list[dict]:
    """Every outline form COCO uses on one 40x50 image (see the test below for what each pixel should be)."""
    square = np.zeros((H, W), bool)
    square[5:15, 30:45] = True  # a compressed RLE, class 5 (label 2)
    crowd = np.zeros((H, W), bool)
    crowd[20:38, 2:30] = True  # a crowd of class 2 (label 1), uncompressed RLE, as COCO stores crowds
    member = np.zeros((H, W), bool)
    member[25:32, 5:12] = True  # one member of the crowd annotated on its own, class 2 again
    third = np.zeros((H, W), bool)
    third[8:22, 40:48] = True  # class 11 (label 3) overlapping the square: rows 8..14, columns 40..44
    polygon = [[4.0, 2.0, 20.0, 2.0, 20.0, 12.0, 4.0, 12.0], [22.0, 3.0, 27.0, 3.0, 24.0, 9.0]]  # two parts
    return [{"image_id": 1, "category_id": 2, "segmentation": polygon, "bbox": [4, 2, 23, 10]},
            {"image_id": 1, "category_id": 5, "segmentation": _rle(square), "bbox": _box(square)},
            {"image_id": 1, "category_id": 2, "segmentation": _uncompressed(crowd), "bbox": _box(crowd),
             "iscrowd": 1},
            {"image_id": 1, "category_id": 2, "segmentation": _rle(member), "bbox": _box(member)},
            {"image_id": 1, "category_id": 11, "segmentation": _rle(third), "bbox": _box(third)}]


def _write(root: Path, annotations: list[dict], images: list[dict] | None = None) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene(H, W, [])).save(root / "images" / "a.png")
    images = images or [{"id": 1, "file_name": "a.png", "height": H, "width": W}]
    return write_coco_json(root / "instances.json", images, annotations)


def test_masks_follow_pycocotools_on_polygons_rle_and_crowds(tmp_path: Path) -> None:
    json_path = _write(tmp_path, _annotations())
    dataset = COCOJoint(tmp_path / "images", json_path)
    _, target = dataset[0]
    mask = target["mask"].numpy()

    # The reference: pycocotools' own annToMask of every annotation, composed by the rules spelled out pixel by pixel.
    coco = COCO(str(json_path))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    drawn = {a["id"]: coco.annToMask(a).astype(bool) for a in anns}
    objects = [a for a in anns if not a["iscrowd"]]
    expected = np.zeros((H, W), np.uint8)
    for y in range(H):
        for x in range(W):
            labels = {CAT_LABEL[a["category_id"]] for a in objects if drawn[a["id"]][y, x]}
            in_crowd = any(drawn[a["id"]][y, x] for a in anns if a["iscrowd"])
            expected[y, x] = labels.pop() if len(labels) == 1 else 255 if labels or in_crowd else 0
    np.testing.assert_array_equal(mask, expected)
    # Each rule met at least once on this image, so none is vacuous.
    assert mask[3, 5] == 1 and mask[5, 24] == 1  # both polygon parts, merged into one object
    assert mask[6, 32] == 2 and mask[18, 45] == 3  # compressed RLEs
    assert mask[10, 42] == 255  # the square (2) and the third object (3) overlap: void
    assert mask[30, 20] == 255 and mask[28, 8] == 1  # crowd alone void; the annotated member keeps its class
    assert mask[39, 49] == 0
    # Crowds are not training boxes (the detection contract), but they are in the evaluation ground truth.
    assert target["labels"].tolist() == [1, 2, 1, 3] and len(dataset.coco.getAnnIds(iscrowd=True)) == 1


def test_unusable_outlines_are_void_inside_their_box_or_stop_a_strict_run(tmp_path: Path) -> None:
    annotations = [{"image_id": 1, "category_id": 2, "bbox": [2, 3, 10, 6]},  # no segmentation
                   {"image_id": 1, "category_id": 5, "segmentation": [[1.0, 1.0, 9.0, 1.0]], "bbox": [20, 20, 8, 5]},
                   {"image_id": 1, "category_id": 11, "bbox": [30, 2, 5, 5],
                    "segmentation": {"size": [10, 10], "counts": [100]}}]  # an RLE of another image's size
    json_path = _write(tmp_path, annotations)
    with pytest.warns(DatasetWarning, match=r"a\.png \(annotation 2: polygon 0 has 4 coordinates"):
        dataset = COCOJoint(tmp_path / "images", json_path)
    mask = dataset[0][1]["mask"].numpy()
    expected = np.zeros((H, W), np.uint8)
    expected[3:9, 2:12] = expected[20:25, 20:28] = expected[2:7, 30:35] = 255
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(DatasetError, match=r"annotation 3: RLE size \[10, 10\] differs from the image's \[40, 50\]"):
        COCOJoint(tmp_path / "images", json_path, strict=True)
    assert outline_problem({"size": [H, W], "counts": [5, 6]}, H, W).startswith("uncompressed RLE run lengths")


def test_image_boxes_and_mask_are_augmented_together(tmp_path: Path) -> None:
    """Zoom out, crop, flip and resize move the mask with the image and its boxes: the pixels of each class stay
    inside its box and keep their colour."""
    colours = {1: RED, 2: GREEN, 3: BLUE}
    rects = [((4, 6, 24, 30), 1), ((30, 8, 46, 36), 3)]
    (tmp_path / "images").mkdir()
    Image.fromarray(scene(H, W, [(r, colours[k]) for r, k in rects])).save(tmp_path / "images" / "a.png")
    annotations = [{"image_id": 1, "category_id": CATEGORIES[k - 1]["id"], "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]} for (x0, y0, x1, y1), k in rects]
    json_path = write_coco_json(tmp_path / "instances.json",
                                [{"id": 1, "file_name": "a.png", "height": H, "width": W}], annotations)
    augment = DetectionAugment(photometric=False, max_zoom=2.0, zoom_p=1.0)  # colours must stay comparable
    dataset = COCOJoint(tmp_path / "images", json_path, transform=joint_train_transform(image_size=64,
                                                                                        augment=augment))
    dataset.transform.set_random_seed(0)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    canvas_seen = flipped = 0
    for _ in range(12):
        image, target = dataset[0]
        mask = target["mask"]
        assert image.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.int64
        rgb = ((image * std + mean) * 255).round()
        for box, label in zip(target["boxes"], target["labels"].tolist()):
            ys, xs = torch.nonzero(mask == label, as_tuple=True)
            assert len(xs) > 0
            # the mask's pixels of this class span its box (to a pixel: both are resized, one by nearest neighbour)
            assert (xs.min() - box[0]).abs() <= 1.5 and (xs.max() + 1 - box[2]).abs() <= 1.5
            assert (ys.min() - box[1]).abs() <= 1.5 and (ys.max() + 1 - box[3]).abs() <= 1.5
            # away from its edges (two pixels, the image border counting as an edge), a class's pixels are its colour
            other = torch.nn.functional.pad((mask != label).float()[None, None], (2, 2, 2, 2), value=1.0)
            inner = torch.nn.functional.max_pool2d(other, 5, 1)[0, 0] == 0
            assert inner.any()
            assert (rgb[:, inner] - torch.tensor(colours[label])[:, None]).abs().max() <= 3
        canvas_seen += int((mask == 255).any())
        flipped += int(target["boxes"][0, 0] > target["boxes"][-1, 0]) if len(target["boxes"]) == 2 else 0
    assert canvas_seen and flipped  # the zoom-out canvas (void) and the flip were both exercised

    evaluation = COCOJoint(tmp_path / "images", json_path, transform=joint_eval_transform(image_size=64))
    image, target = evaluation[0]
    assert image.shape == (3, 64, 64) and target["mask"].shape == (H, W)  # scored at the original size
    assert torch.equal(target["boxes"][0], torch.tensor([4 * 64 / W, 6 * 64 / H, 24 * 64 / W, 30 * 64 / H]))


def _voc_with_masks(root: Path) -> Path:
    """A VOC2012 tree whose segmentation list has an image with both files, one without a mask, one without an
    annotation, and whose detection list has another image with both files."""
    voc = root / "VOC2012"
    for sub in ("Annotations", "JPEGImages", "SegmentationClass", "ImageSets/Main", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    xml = ("<annotation><size><width>40</width><height>30</height><depth>3</depth></size><object><name>cat</name>"
           "<difficult>0</difficult><bndbox><xmin>5</xmin><ymin>4</ymin><xmax>20</xmax><ymax>18</ymax></bndbox>"
           "</object></annotation>")
    labels = np.zeros((30, 40), np.uint8)
    labels[3:18, 4:20] = 8  # cat
    labels[3, 4:20] = 255
    for name, has_xml, has_png in (("both", True, True), ("no_mask", True, False), ("no_xml", False, True),
                                   ("main_only", True, True)):
        Image.fromarray(scene(30, 40, [((4, 3, 20, 18), RED)])).save(voc / "JPEGImages" / f"{name}.jpg")
        if has_xml:
            (voc / "Annotations" / f"{name}.xml").write_text(xml)
        if has_png:
            save_palette_png(labels, voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("both\nno_mask\nno_xml\n")
    (voc / "ImageSets/Main/train.txt").write_text("both\nno_mask\nmain_only\n")
    (voc / "ImageSets/Main/val.txt").write_text("both\nmain_only\n")  # no segmentation list: Main's is used
    return voc


def test_voc_pairing_picks_exactly_the_images_with_both_files(tmp_path: Path) -> None:
    voc = _voc_with_masks(tmp_path)
    names, counts = paired_names(voc, "train")
    assert names == ["both"]
    assert counts == {"listed": 3, "with annotation and mask": 1, "without a mask": 1, "without an annotation": 1}
    assert paired_names(voc, "val")[0] == ["both", "main_only"]
    with pytest.raises(FileNotFoundError, match="test.txt"):
        paired_names(voc, "test")

    dataset = VOCJoint(voc, split="train")
    image, target = dataset[0]
    assert len(dataset) == 1 and target["labels"].tolist() == [8]  # cat, the same label in box and mask
    assert target["boxes"].tolist() == [[4.0, 3.0, 20.0, 18.0]]
    mask = target["mask"]
    assert mask.shape == (30, 40) and set(mask.unique().tolist()) == {0, 8, 255}

    shutil.copy(voc / "SegmentationClass" / "both.png", voc / "SegmentationClass" / "main_only.png")
    Image.new("P", (10, 10)).save(voc / "SegmentationClass" / "main_only.png")  # a mask of the wrong size
    with pytest.raises(DatasetError, match=r"main_only\.png \(mask 10x10, image .*main_only\.jpg 30x40"):
        VOCJoint(voc, split="val", strict=True)


def test_shapes_json_outlines_give_the_rendered_pixels(tmp_path: Path) -> None:
    """The generated demo set (the files make demo writes) read back as masks: each object's RLE is its visible
    pixels, so the mask holds exactly the labels the boxes name."""
    from mobilenetv2_dense.datasets.detection.shapes import write_shapes_coco

    root = write_shapes_coco(tmp_path / "coco", num_train=1, num_val=3, image_size=64, seed=1)
    dataset = COCOJoint(root / "val2017", root / "annotations" / "instances_val2017.json")
    annotations = json.loads((root / "annotations" / "instances_val2017.json").read_text())["annotations"]
    for i in range(len(dataset)):
        image, target = dataset[i]
        labels = set(target["mask"].unique().tolist()) - {0}
        assert labels == set(target["labels"].tolist())
        own = [a for a in annotations if a["image_id"] == target["image_id"]]
        assert int((target["mask"] > 0).sum()) == sum(a["area"] for a in own)  # visible pixels, disjoint
