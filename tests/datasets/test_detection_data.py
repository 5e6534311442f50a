"""Detection data: COCO and VOC loaders on written trees, the set-up check, data modules, the generated dataset."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader
from torchvision.ops import box_iou

from mobilenetv2_dense.datasets.checks import DatasetError, DatasetWarning
from mobilenetv2_dense.datasets.detection.coco import COCODetection
from mobilenetv2_dense.datasets.detection.dataset import detection_collate
from mobilenetv2_dense.datasets.detection.shapes import MARKER, SHAPE_CATEGORY_IDS, write_shapes_coco
from mobilenetv2_dense.datasets.detection.transforms import DetectionAugment, train_transform
from mobilenetv2_dense.datasets.detection.voc import VOC_CLASSES, VOCDetection, parse_voc_xml
from mobilenetv2_dense.tasks.detection.datamodule import COCODataModule, ShapesCOCODataModule, VOCDetectionDataModule
from tests.conftest import BLUE, GREEN, RED

QUIET = {"num_workers": 0, "pin_memory": False}


def by_id(dataset: COCODetection) -> dict[int, tuple[np.ndarray, dict]]:
    return {target["image_id"]: (image, target) for image, target in (dataset[i] for i in range(len(dataset)))}


def colour_box(image: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> list[float]:
    """xyxy bounds of the pixels within ``tolerance`` of ``colour`` (JPEG is lossy)."""
    ys, xs = np.nonzero((np.abs(image.astype(int) - colour) < tolerance).all(axis=2))
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


# ---------------------------------------------------------------- COCO


def test_coco_counts_mapping_crowd_and_negatives(good_coco: Path) -> None:
    dataset = COCODetection(good_coco.parent / "images", good_coco)
    assert len(dataset) == 6
    assert dataset.cat_id_to_label == {2: 1, 5: 2, 11: 3}
    assert dataset.label_to_cat_id == {1: 2, 2: 5, 3: 11}
    assert dataset.class_names == ["red", "green", "blue"]
    items = by_id(dataset)
    image, target = items[10]
    # the crowd box (category 5, whole image) is left out; [x, y, w, h] -> xyxy
    assert target["labels"].tolist() == [1, 3] and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[4, 6, 24, 30], [40, 10, 60, 40]] and target["boxes"].dtype == torch.float32
    assert colour_box(image, RED) == [4, 6, 24, 30] and colour_box(image, BLUE) == [40, 10, 60, 40]
    assert target["orig_size"].tolist() == [48, 64]
    _, negative = items[20]
    assert negative["boxes"].shape == (0, 4) and negative["labels"].shape == (0,)
    # the crowd box is still in the index (flagged) for whoever needs it
    assert dataset.index.ignore.sum() == 1


def test_colour_modes_become_rgb_and_exif_is_applied(good_coco: Path) -> None:
    items = by_id(COCODetection(good_coco.parent / "images", good_coco))
    for image_id, (image, target) in items.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, image_id
        assert list(image.shape[:2]) == target["orig_size"].tolist()
    gray, _ = items[30]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert colour_box(items[40][0], GREEN) == [2, 2, 12, 12]  # RGBA
    assert colour_box(items[50][0], BLUE) == [10, 4, 30, 14]  # CMYK JPEG
    # EXIF orientation 6: the displayed frame is 40 wide x 60 high and the json box is in that frame
    exif_image, exif_target = items[60]
    assert exif_image.shape[:2] == (60, 40)
    assert colour_box(exif_image, RED) == exif_target["boxes"][0].tolist() == [5, 30, 25, 55]


def test_bad_inputs_are_counted_named_and_skipped(bad_coco: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.warns(DatasetWarning) as caught:
        dataset = COCODetection(bad_coco.parent / "images", bad_coco)
    summary = capsys.readouterr().out
    message = str(caught[0].message)
    for kind, file in [("missing file", "missing.jpg"), ("truncated", "truncated.jpg"), ("unreadable", "garbage.jpg"),
                       ("zero-area box", "ok.png"), ("box past the image edge", "ok.png"),
                       ("box outside the image", "ok.png"), ("unknown category", "ok.png"),
                       ("image size differs", "resized.png"), ("box of an image not in the annotations", "")]:
        assert kind in summary and kind in message, kind
        assert any(kind in line and file in line for line in message.splitlines()), (kind, file)
    assert "5 images, 2 images kept" in summary
    items = by_id(dataset)
    assert sorted(items) == [1, 2]
    ok = items[1][1]
    assert ok["boxes"].tolist() == [[5, 5, 20, 20], [30, 30, 40, 35]]  # good box + the clipped one
    assert ok["labels"].tolist() == [1, 3]
    resized = items[2][1]  # the file (50x30) wins over the json (100x60); boxes are clipped to the file
    assert resized["orig_size"].tolist() == [30, 50]
    assert resized["boxes"].tolist() == [[5, 5, 20, 20], [40, 20, 50, 30]]


def test_strict_raises_naming_the_files(bad_coco: Path) -> None:
    with pytest.raises(DatasetError) as error:
        COCODetection(bad_coco.parent / "images", bad_coco, strict=True)
    for file in ("missing.jpg", "truncated.jpg", "garbage.jpg", "resized.png", str(bad_coco)):
        assert file in str(error.value)


def test_decode_failure_at_load_time_warns_and_replaces(good_coco: Path, copy_tree) -> None:
    root = copy_tree(good_coco.parent)
    dataset = COCODetection(root / "images", root / "instances.json")
    files = [Path(f).name for f in dataset.index.files]
    (root / "images" / files[0]).write_bytes(b"corrupted after the set-up check")
    with pytest.warns(DatasetWarning, match=files[0]):
        image, target = dataset[0]
    assert target["image_id"] == dataset.index.image_ids[1] and image.shape[2] == 3


def test_broken_json_raises_naming_it(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json"):
        COCODetection(tmp_path / "images", tmp_path / "bad.json")


# ---------------------------------------------------------------- VOC


def test_voc_xml_one_based_corners_become_zero_based(voc_root: Path) -> None:
    stated, names, boxes, difficult, _ = parse_voc_xml(voc_root / "VOC2012" / "Annotations" / "v0.xml")
    assert stated == (48, 64) and names == ["cat", "dog"]
    # XML says xmin=5 ymin=7 xmax=24 ymax=30 (1-based, inclusive) for pixel columns 4..23, rows 6..29
    assert boxes.tolist() == [[4, 6, 24, 30], [40, 10, 60, 40]]
    assert difficult.tolist() == [False, True]


def test_voc_dataset_leaves_difficult_out_and_flags_it_for_evaluation(voc_root: Path) -> None:
    train = VOCDetection(voc_root / "VOC2012", split="train")
    image, target = train[0]
    assert target["labels"].tolist() == [VOC_CLASSES.index("cat") + 1]  # the difficult dog is not a target
    assert colour_box(image, RED) == target["boxes"][0].tolist() == [4, 6, 24, 30]
    assert [train[i][1]["image_id"] for i in range(len(train))] == [0, 1]
    val = VOCDetection(voc_root / "VOC2012", split="val")
    gt = val.to_coco()
    anns = gt.loadAnns(gt.getAnnIds())
    assert [(a["category_id"], a["bbox"], a["iscrowd"]) for a in anns] == [
        (VOC_CLASSES.index("car") + 1, [0, 0, 20, 20], 0), (VOC_CLASSES.index("bottle") + 1, [30, 30, 20, 20], 1)]
    # Detecting only the car scores AP 1: the missed difficult bottle is ignored, not counted as a miss.
    results = gt.loadRes([{"image_id": 0, "category_id": anns[0]["category_id"], "bbox": [0, 0, 20, 20],
                           "score": 0.9}])
    evaluator = COCOeval(gt, results, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_voc_bad_inputs_are_reported(voc_root: Path, copy_tree, capsys: pytest.CaptureFixture) -> None:
    voc = copy_tree(voc_root) / "VOC2012"
    (voc / "ImageSets/Main/train.txt").write_text("v0\nv1\nnot_there\n")
    xml = voc / "Annotations" / "v1.xml"
    xml.write_text(xml.read_text().replace("<name>person</name>", "<name>unicorn</name>"))
    with pytest.warns(DatasetWarning, match="not_there.xml"):
        dataset = VOCDetection(voc, split="train")
    summary = capsys.readouterr().out
    assert "missing annotation" in summary and "unknown category" in summary and "'unicorn'" in summary
    assert len(dataset) == 2 and dataset[1][1]["labels"].shape == (0,)  # v1 kept as a negative
    with pytest.raises(DatasetError, match="unicorn"):
        VOCDetection(voc, split="train", strict=True)


def test_annotations_without_images_raise(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "empty.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DatasetError, match="no images"):
        COCODetection(tmp_path / "images", tmp_path / "empty.json")


def test_voc_datamodule(voc_root: Path) -> None:
    dm = VOCDetectionDataModule(str(voc_root), image_size=64, batch_size=2, **QUIET)
    assert dm.num_classes == 20 and dm.class_names[0] == "aeroplane" and dm.label_to_cat_id[20] == 20
    dm.prepare_data()
    dm.setup("fit")
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (1, 3, 64, 64)
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[0.0, 0.0, 64 * 20 / 50, 64 * 20 / 50]]))
    assert len(dm.val_coco.getAnnIds()) == 2
    with pytest.raises(FileNotFoundError, match="VOC2007"):
        VOCDetectionDataModule(str(voc_root), val_set="VOC2007/test").prepare_data()


# ---------------------------------------------------------------- data modules and batches


def test_coco_datamodule_batches_follow_the_contract(good_coco: Path) -> None:
    images_dir = str(good_coco.parent / "images")
    dm = COCODataModule(train_images=images_dir, train_annotations=str(good_coco), val_images=images_dir,
                        val_annotations=str(good_coco), image_size=64, batch_size=3, mean=(0.5, 0.5, 0.5),
                        std=(0.5, 0.5, 0.5), **QUIET)
    assert dm.num_classes == 3 and dm.label_to_cat_id == {1: 2, 2: 5, 3: 11}  # before setup: read from the json
    dm.prepare_data()
    dm.setup("fit")
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1  # mean/std 0.5 map [0, 255] to [-1, 1]
    first = targets[0]  # image 10, 64x48: x scales by 64 / 64 and y by 64 / 48
    assert first["image_id"] == 10 and first["orig_size"].tolist() == [48, 64]
    torch.testing.assert_close(first["boxes"], torch.tensor([[4, 6 * 64 / 48, 24, 30 * 64 / 48],
                                                             [40, 10 * 64 / 48, 60, 40 * 64 / 48]]))
    assert first["labels"].dtype == torch.int64 and first["boxes"].dtype == torch.float32
    train_images, train_targets = next(iter(dm.train_dataloader()))
    assert train_images.shape == (3, 3, 64, 64) and len(train_targets) == 3
    assert isinstance(dm.val_coco, COCO) and len(dm.val_coco.getImgIds()) == 6
    assert len(dm.test_dataloader().dataset) == 6  # test split = val


def test_coco_datamodule_missing_paths_name_the_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"instances_train2017.json.*train2017/"):
        COCODataModule(str(tmp_path / "coco")).prepare_data()


def test_predict_folder_batches_carry_paths_and_sizes(good_coco: Path) -> None:
    dm = COCODataModule(predict_images=str(good_coco.parent / "images"), image_size=32, batch_size=4, **QUIET)
    dm.setup("predict")
    images, targets = next(iter(dm.predict_dataloader()))
    assert images.shape == (4, 3, 32, 32)
    assert [Path(t["path"]).name for t in targets] == ["a.png", "cmyk.jpg", "exif.jpg", "gray.png"]
    assert [t["orig_size"].tolist() for t in targets] == [[48, 64], [32, 32], [60, 40], [32, 32]]


def test_collate_stacks_images_and_keeps_targets() -> None:
    batch = [(torch.zeros(3, 8, 8), {"boxes": torch.zeros(k, 4), "labels": torch.ones(k, dtype=torch.int64)})
             for k in (0, 2, 5)]
    images, targets = detection_collate(batch)
    assert images.shape == (3, 3, 8, 8) and [len(t["boxes"]) for t in targets] == [0, 2, 5]


def test_workers_get_different_augmentations(good_coco: Path) -> None:
    """albumentations keeps its own random state; without reseeding, forked workers would repeat each other."""
    from mobilenetv2_dense.datasets.seeding import seed_worker

    transform = train_transform(image_size=32, augment=DetectionAugment(photometric=False, max_zoom=4.0, zoom_p=1.0))
    dataset = COCODetection(good_coco.parent / "images", good_coco, transform=transform)
    # the same image twice, one batch per worker
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=detection_collate,
                        worker_init_fn=seed_worker, sampler=[0, 0])
    (a, _), (b, _) = list(loader)
    assert not torch.equal(a, b)


# ---------------------------------------------------------------- generated dataset


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools' decode
def test_generated_dataset_reads_back_through_pycocotools(shapes_coco: Path) -> None:
    for split, count in (("train2017", 24), ("val2017", 8)):
        gt = COCO(str(shapes_coco / "annotations" / f"instances_{split}.json"))
        assert len(gt.getImgIds()) == count == len(list((shapes_coco / split).glob("*.jpg")))
        assert sorted(gt.getCatIds()) == list(SHAPE_CATEGORY_IDS)
        anns = gt.loadAnns(gt.getAnnIds())
        assert {"info", "licenses"} <= set(gt.dataset)
        assert len({a["image_id"] for a in anns}) < count  # some images have no objects
        rles = [gt.annToRLE(a) for a in anns]
        np.testing.assert_allclose(mask_utils.area(rles), [a["area"] for a in anns])
        np.testing.assert_allclose(mask_utils.toBbox(rles), [a["bbox"] for a in anns])
        dataset = COCODetection(shapes_coco / split, shapes_coco / "annotations" / f"instances_{split}.json",
                                strict=True)
        assert len(dataset) == count
        assert dataset.index.offsets[-1] == len(anns)
        # the box of the drawn pixels, read back from the JPEG, matches the annotation
        image, target = dataset[int(np.argmax(np.diff(dataset.index.offsets)))]
        with Image.open(dataset.index.files[0]) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (96, 96)
        first = gt.loadAnns(gt.getAnnIds(imgIds=target["image_id"]))[0]
        mask = torch.as_tensor(mask_utils.decode(gt.annToRLE(first)))
        ys, xs = torch.nonzero(mask, as_tuple=True)
        drawn = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
        assert box_iou(drawn, target["boxes"][:1]).item() == pytest.approx(1.0)


def test_shapes_datamodule_writes_once_and_rewrites_half_written(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    dm = ShapesCOCODataModule(str(root), num_train=3, num_val=2, scene_size=48, image_size=48, batch_size=2,
                              **QUIET)
    assert dm.num_classes == 4 and dm.label_to_cat_id == dict(zip(range(1, 5), SHAPE_CATEGORY_IDS))
    dm.prepare_data()
    assert json.loads((root / MARKER).read_text())["num_train"] == 3
    written = (root / "annotations" / "instances_train2017.json").stat().st_mtime_ns
    dm.prepare_data()  # complete and same settings: nothing rewritten
    assert (root / "annotations" / "instances_train2017.json").stat().st_mtime_ns == written
    (root / MARKER).unlink()  # as if a run was stopped half-way
    (root / "annotations" / "instances_val2017.json").write_text("{")
    dm.prepare_data()
    assert (root / MARKER).is_file() and len(COCO(str(root / "annotations/instances_val2017.json")).imgs) == 2
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 48, 48)
    assert all(((t["labels"] >= 1) & (t["labels"] <= 4)).all() for t in targets)


def test_shapes_writer_refuses_someone_elses_tree(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not written by write_shapes_coco"):
        write_shapes_coco(tmp_path, num_train=1, num_val=1)

