"""YOLO-format detection data read as it is: data.yaml, images/ and their labels/ twins written to disk, read back
in pixels, scored by pycocotools against the in-memory ground truth, and the set-up check on broken files."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.cocoeval import COCOeval

from mobilenetv2_dense.datasets.checks import DatasetError, DatasetWarning
from mobilenetv2_dense.datasets.detection import YOLODetection, label_path, read_data_yaml
from mobilenetv2_dense.tasks.detection import YOLODataModule
from tests.conftest import BLUE, GREEN, RED, scene

NAMES = {7: "red", 0: "green", 3: "blue"}  # YAML class ids out of order and with gaps: labels 1..3 = ids 0, 3, 7
COLOUR_ID = {RED: 7, GREEN: 0, BLUE: 3}


def yolo_line(class_id: int, box: tuple[int, int, int, int], height: int, width: int) -> str:
    """``class cx cy w h`` of a pixel box ``(x0, y0, x1, y1)``, normalised as YOLO writes it."""
    x0, y0, x1, y1 = box
    return f"{class_id} {(x0 + x1) / 2 / width} {(y0 + y1) / 2 / height} {(x1 - x0) / width} {(y1 - y0) / height}"


def write_image(path: Path, height: int, width: int, rects: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene(height, width, rects)).save(path)


def write_labels(image: Path, lines: list[str]) -> None:
    label_path(image).parent.mkdir(parents=True, exist_ok=True)
    label_path(image).write_text("".join(f"{line}\n" for line in lines))


# name -> (height, width, rectangles); "negative" has an empty label file, "unlabelled" none at all.
TRAIN = {"a": (48, 64, [((4, 6, 24, 30), RED), ((40, 10, 60, 40), BLUE)]),
         "nested/b": (40, 40, [((10, 10, 30, 35), GREEN)]),
         "negative": (32, 32, []), "unlabelled": (32, 32, [])}
VAL = {"v0": (50, 50, [((0, 0, 20, 20), RED), ((30, 30, 50, 50), GREEN)]), "v1": (30, 60, [((5, 5, 55, 25), BLUE)])}


def write_yolo(root: Path) -> Path:
    """``root/data.yaml`` over ``images/{train,val}`` (PNG) and ``labels/{train,val}``; val listed in a .txt file."""
    for split, specs in (("train", TRAIN), ("val", VAL)):
        for name, (height, width, rects) in specs.items():
            image = root / "images" / split / f"{name}.png"
            write_image(image, height, width, rects)
            if name != "unlabelled":
                write_labels(image, [yolo_line(COLOUR_ID[colour], box, height, width) for box, colour in rects])
    (root / "val.txt").write_text("./images/val/v0.png\nimages/val/v1.png\n")
    names = "".join(f"  {k}: {v}\n" for k, v in NAMES.items())
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: val.txt\nnames:\n{names}")
    return root / "data.yaml"


@pytest.fixture
def data_yaml(tmp_path: Path) -> Path:
    return write_yolo(tmp_path / "yolo")


def test_boxes_read_back_in_pixels_equal_the_ones_written(data_yaml: Path) -> None:
    dataset = YOLODetection(data_yaml, "train")
    assert dataset.class_names == ["green", "blue", "red"] and dataset.label_to_cat_id == {1: 0, 2: 3, 3: 7}
    files = [Path(f).relative_to(data_yaml.parent).as_posix() for f in dataset.index.files]
    assert files == ["images/train/a.png", "images/train/negative.png", "images/train/nested/b.png",
                     "images/train/unlabelled.png"]  # folders searched recursively, in path order
    items = [dataset[i] for i in range(len(dataset))]
    label_of = {colour: dataset.cat_id_to_label[cat] for colour, cat in COLOUR_ID.items()}
    for (image, target), name in zip(items, ["a", "negative", "nested/b", "unlabelled"]):
        height, width, rects = TRAIN[name]
        assert image.shape == (height, width, 3) and target["orig_size"].tolist() == [height, width]
        np.testing.assert_allclose(target["boxes"].numpy(), np.array([box for box, _ in rects]).reshape(-1, 4),
                                   atol=1e-4)
        assert target["labels"].tolist() == [label_of[colour] for _, colour in rects]
        for box, colour in rects:  # the box is where the colour is
            ys, xs = np.nonzero((image == colour).all(axis=2))
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == list(box)
    val = YOLODetection(data_yaml, "val")  # a list file: ./ and bare relative lines, from its folder
    assert [Path(f).name for f in val.index.files] == ["v0.png", "v1.png"]


def test_polygon_lines_give_their_bounding_box_and_exif_rotation_and_a_bom_are_handled(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    # Displayed 40 wide, 60 high; stored sideways with EXIF orientation 6. Labels are in the displayed frame.
    display = Image.fromarray(scene(60, 40, [((5, 30, 25, 55), RED)]))
    exif = Image.Exif()
    exif[0x0112] = 6
    (root / "images").mkdir(parents=True)
    display.transpose(Image.Transpose.ROTATE_90).save(root / "images" / "exif.jpg", quality=95, exif=exif)
    polygon = "0 0.125 0.5 0.625 0.5 0.625 0.9166666 0.125 0.9166666"  # the red patch's corners, x / 40, y / 60
    write_labels(root / "images" / "exif.jpg", [])
    label_path(root / "images" / "exif.jpg").write_bytes(b"\xef\xbb\xbf" + polygon.encode())  # a Windows tool's BOM
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [red]\n")  # no path: data.yaml's folder
    dataset = YOLODetection(root / "data.yaml", "train")
    image, target = dataset[0]
    assert image.shape == (60, 40, 3)
    np.testing.assert_allclose(target["boxes"].numpy(), [[5, 30, 25, 55]], atol=1e-3)


def test_in_memory_ground_truth_scores_a_perfect_prediction_at_map_1(data_yaml: Path) -> None:
    dataset = YOLODetection(data_yaml, "val")
    coco = dataset.to_coco()
    assert sorted(coco.getCatIds()) == [0, 3, 7]  # the YAML's class ids
    assert [image["file_name"] for image in coco.dataset["images"]] == ["images/val/v0.png", "images/val/v1.png"]
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco.dataset["annotations"]]
    assert len(perfect) == 3
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes(perfect), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0) and evaluator.stats[1] == pytest.approx(1.0)
    # the boxes written: v1's blue box (5, 5)..(55, 25) in a 60x30 image
    blue = [a for a in coco.dataset["annotations"] if a["category_id"] == 3]
    assert blue[0]["bbox"] == pytest.approx([5, 5, 50, 20])


def test_setup_check_names_bad_files_and_lines(data_yaml: Path, capsys) -> None:
    root = data_yaml.parent
    a = root / "images" / "train" / "a.png"
    good = label_path(a).read_text()
    label_path(a).write_text(good + "9 0.5 0.5 0.1 0.1\n"      # line 3: class 9 not in names
                             + "0 0.5 0.5 1.5 0.1\n"           # line 4: width 1.5 (pixels written by mistake?)
                             + good.splitlines()[0] + "\n"     # line 5: line 1 again
                             + "0 0.5 0.5\n"                   # line 6: three values
                             + "0 0.5 zero 0.1 0.1\n")         # line 7: a word
    (root / "images" / "train" / "broken.png").write_bytes(b"not a png at all" * 8)
    write_labels(root / "images" / "train" / "broken.png", ["0 0.5 0.5 0.2 0.2"])
    (root / "images" / "train" / "odd.png").write_bytes((root / "images" / "train" / "negative.png").read_bytes())
    label_path(root / "images" / "train" / "odd.png").write_bytes(b"\xff\xfe\x00 binary")

    with pytest.warns(DatasetWarning) as warned:
        dataset = YOLODetection(data_yaml, "train")
    summary = capsys.readouterr().out
    message = str(warned[0].message)
    labels = f"{label_path(a)}"
    for expected in (f"class id not in names (line dropped): {labels}:3 (class 9; data.yaml names [0, 3, 7])",
                     f"coordinates outside [0, 1] (line dropped): {labels}:4",
                     f"duplicate line (dropped): {labels}:5 (same as line 1)",
                     f"malformed line (dropped): {labels}:6 (3 values",
                     f"malformed line (dropped): {labels}:7 (not a number",
                     f"{root / 'images' / 'train' / 'broken.png'} (unreadable",
                     f"unreadable label file (image skipped): {label_path(root / 'images' / 'train' / 'odd.png')}"):
        assert expected in message, expected
    assert "YOLO data.yaml train: 6 images, 4 images kept" in summary and "1 without a label file" in summary
    # what is left: a's two good boxes, b's one
    assert len(dataset) == 4 and len(dataset.index.boxes) == 3

    with pytest.raises(DatasetError, match=r"(?s)strict=True.*a\.txt:3.*a\.txt:4.*Fix or remove the label lines"):
        YOLODetection(data_yaml, "train", strict=True)


def test_data_yaml_errors_name_the_file_the_key_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pass the dataset's data.yaml"):
        read_data_yaml(tmp_path / "absent.yaml")
    bad = tmp_path / "data.yaml"
    bad.write_text("train: images\nval: images\nnc: 3\nnames: [a, b]\n")
    with pytest.raises(DatasetError, match="nc is 3 but 'names' lists 2 classes"):
        read_data_yaml(bad)
    bad.write_text("train: images\nnames: {zero: a}\n")
    with pytest.raises(DatasetError, match="must be integers"):
        read_data_yaml(bad)
    bad.write_text("train: images/train\nnames: [a]\n")
    config = read_data_yaml(bad)
    with pytest.raises(DatasetError, match="no 'val' key; add 'val: images/val'"):
        config.sources("val")
    with pytest.raises(FileNotFoundError, match=r"train: 'images/train' is .* which does not exist"):
        config.sources("train")
    # Roboflow writes '../train/images' beside the yaml; Ultralytics tries it without the '../'.
    (tmp_path / "train" / "images").mkdir(parents=True)
    bad.write_text("train: ../train/images\nval: ../train/images\nnames: [a]\n")
    assert read_data_yaml(bad).sources("train") == [tmp_path / "train" / "images"]


def test_label_files_are_the_labels_twin_of_the_last_images_folder() -> None:
    assert label_path("d/images/train/x.jpg") == Path("d/labels/train/x.txt")
    assert label_path("images/d/images/x.b.png") == Path("images/d/labels/x.b.txt")
    assert label_path("d/photos/x.jpg") == Path("d/photos/x.txt")  # no images folder: beside the image


def test_data_module_gives_classes_ground_truth_test_split_and_train_boxes(data_yaml: Path) -> None:
    root = data_yaml.parent
    datamodule = YOLODataModule(str(data_yaml), image_size=32, num_workers=0)
    assert datamodule.num_classes == 3 and datamodule.label_to_cat_id == {1: 0, 2: 3, 3: 7}
    assert sorted(datamodule.val_coco.getCatIds()) == [0, 3, 7]
    assert datamodule.test_coco is None  # no test key: the test split is the val split
    boxes = datamodule.train_boxes()  # resized to 32x32, read without decoding an image
    np.testing.assert_allclose(boxes[0].numpy(), [[2, 4, 12, 20], [20, 6.6667, 30, 26.6667]], atol=1e-3)
    assert [len(b) for b in boxes] == [2, 0, 1, 0]

    data_yaml.write_text(data_yaml.read_text() + "test: images/val\n")
    with_test = YOLODataModule(str(data_yaml), image_size=32, num_workers=0)
    with_test.setup("test")
    assert len(with_test.test_dataloader().dataset) == 2 and with_test.val_dataset is None
    assert len(with_test.test_coco.dataset["annotations"]) == 3
    assert YOLODataModule(str(root / "absent.yaml")).paths == {"val_images": None}
