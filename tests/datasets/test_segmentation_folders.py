"""Segmentation data beyond VOC, on hand-made masks and tiny sets written in the real layouts: the colour table, the
Cityscapes labelId -> trainId table, the ADE20K shift, classes files, pairing by name and the set-up check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenetv2_dense.datasets.checks import DatasetError, DatasetReport, DatasetWarning
from mobilenetv2_dense.datasets.segmentation import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    MaskDecoder,
    MaskError,
    ade20k_decoder,
    cityscapes_decoder,
    class_table,
    folder_samples,
)
from mobilenetv2_dense.tasks.segmentation import (
    ADE20KDataModule,
    CityscapesDataModule,
    SegmentationFolderDataModule,
)
from tests.datasets.seg_layouts import (
    FOLDER_CLASSES,
    FOLDER_COLOURS,
    VOID_COLOUR,
    write_ade20k,
    write_cityscapes,
    write_folder_set,
)


def save_l(values: list[list[int]], path: Path) -> Path:
    Image.fromarray(np.array(values, dtype=np.uint8), mode="L").save(path)
    return path


# ------------------------------------------------------------------------------------------ mask formats


def test_colour_table_maps_each_colour_to_its_class_and_void(tmp_path):
    road, car, void = FOLDER_COLOURS[1], FOLDER_COLOURS[2], VOID_COLOUR
    rgb = np.array([[road, car, void], [(0, 0, 0), road, car]], dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "m.png")
    decoder = MaskDecoder.indices(3).with_colours(FOLDER_COLOURS, [VOID_COLOUR])
    labels, from_colours = decoder(tmp_path / "m.png")
    assert from_colours and labels.dtype == np.uint8
    assert labels.tolist() == [[1, 2, 255], [0, 1, 2]]
    # index masks still read as indices with a colour table
    assert decoder(save_l([[0, 2, 255]], tmp_path / "i.png"))[0].tolist() == [[0, 2, 255]]


def test_colours_not_in_the_table_are_named_with_the_file(tmp_path):
    Image.fromarray(np.array([[(0, 0, 0), (1, 2, 3)]], dtype=np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(MaskError, match=r"odd\.png.*\(1, 2, 3\).*ignore_colors") as error:
        MaskDecoder.indices(3).with_colours(FOLDER_COLOURS)(tmp_path / "odd.png")
    assert error.value.kind == "masks with colours not in the colour table"
    with pytest.raises(MaskError, match=r"odd\.png.*no colour table.*colors"):
        MaskDecoder.indices(3)(tmp_path / "odd.png")


def test_colour_table_refuses_a_colour_given_twice():
    with pytest.raises(ValueError, match=r"\(0, 0, 0\).*twice"):
        MaskDecoder.indices(3).with_colours(FOLDER_COLOURS, [(0, 0, 0)])


def test_cityscapes_label_ids_map_to_the_19_train_ids(tmp_path):
    ids = [[0, 1, 6, 7, 8, 9, 11, 12, 13, 14, 17],
           [19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29],
           [30, 31, 32, 33, 33, 7, 7, 7, 7, 7, 7]]
    expected = [[255, 255, 255, 0, 1, 255, 2, 3, 4, 255, 5],
                [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255],
                [255, 16, 17, 18, 18, 0, 0, 0, 0, 0, 0]]
    labels, _ = cityscapes_decoder()(save_l(ids, tmp_path / "a_gtFine_labelIds.png"))
    assert labels.tolist() == expected
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[13] == "car" and CITYSCAPES_CLASSES[18] == "bicycle"
    with pytest.raises(MaskError, match=r"a_gtFine_labelIds\.png.*\[34, 200\].*Cityscapes labelIds 0\.\.33"):
        cityscapes_decoder()(save_l([[7, 34, 200]], tmp_path / "a_gtFine_labelIds.png"))
    # converted masks (createTrainIdLabelImgs.py) read as they are
    assert cityscapes_decoder("labelTrainIds")(save_l([[0, 18, 255]], tmp_path / "t.png"))[0].tolist() == [[0, 18,
                                                                                                             255]]
    with pytest.raises(ValueError, match="labelIds.*labelTrainIds"):
        cityscapes_decoder("color")


def test_ade20k_zero_is_void_and_classes_shift_down(tmp_path):
    labels, _ = ade20k_decoder()(save_l([[0, 1, 2, 75, 150]], tmp_path / "ADE_val_00000001.png"))
    assert labels.tolist() == [[255, 0, 1, 74, 149]]
    assert len(ADE20K_CLASSES) == 150 and ADE20K_CLASSES[0] == "wall" and ADE20K_CLASSES[149] == "flag"
    with pytest.raises(MaskError, match=r"ADE_val_00000001\.png.*\[151\]"):
        ade20k_decoder()(save_l([[0, 151]], tmp_path / "ADE_val_00000001.png"))


def test_index_masks_with_another_void_value(tmp_path):
    decoder = MaskDecoder.indices(3, ignore_index=254)
    assert decoder(save_l([[0, 2, 254]], tmp_path / "m.png"))[0].tolist() == [[0, 2, 255]]
    with pytest.raises(MaskError, match=r"\[3, 255\].*void 254"):
        decoder(save_l([[0, 3, 255]], tmp_path / "m.png"))
    with pytest.raises(ValueError, match="ignore_index=1 is the stored value of class 1"):
        MaskDecoder.indices(3, ignore_index=1)


# ------------------------------------------------------------------------------------------ classes


def test_classes_from_a_list_a_text_file_and_yaml_files(tmp_path):
    assert class_table(["bg", "road"]).names == ("bg", "road")
    (tmp_path / "classes.txt").write_text("background\n\n road \ncar\n")
    assert class_table(tmp_path / "classes.txt").names == ("background", "road", "car")
    (tmp_path / "list.yaml").write_text("[background, road]\n")
    assert class_table(str(tmp_path / "list.yaml")).names == ("background", "road")
    (tmp_path / "full.yaml").write_text("names: {0: background, 1: road, 2: car}\n"
                                        "colors: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]\n"
                                        "ignore_colors: [[255, 255, 255]]\n")
    table = class_table(tmp_path / "full.yaml")
    assert table.names == tuple(FOLDER_CLASSES) and table.colours == tuple(FOLDER_COLOURS)
    assert table.ignore_colours == (VOID_COLOUR,)
    # colours given in the config replace the file's
    assert class_table(tmp_path / "full.yaml", colours=[[1, 1, 1], [2, 2, 2], [3, 3, 3]]).colours[2] == (3, 3, 3)


@pytest.mark.parametrize("content, message", [
    ("names: [a, a]\n", r"\['a'\] given twice"),
    ("names: [a, b]\ncolors: [[0, 0, 0]]\n", "1 colours for 2 classes"),
    ("names: [a, b]\ncolors: [[0, 0, 0], [0, 300, 0]]\n", r"\[0, 300, 0\] is not a colour"),
    ("names: {0: a, 2: b}\n", r"labels \[0, 2\] are not 0\.\.1"),
    ("classes: [a, b]\n", r"keys \['classes'\]"),
    ("names: [a]\n", "at least 2"),
])
def test_bad_classes_files_are_refused_naming_the_file(tmp_path, content, message):
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        class_table(tmp_path / "bad.yaml")
    assert "bad.yaml" in str(error.value)


def test_missing_classes_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.txt.*list of names"):
        class_table(str(tmp_path / "nowhere.txt"))


# ------------------------------------------------------------------------------------------ folders


def folder_module(root: Path, **kwargs) -> SegmentationFolderDataModule:
    kwargs = {"classes": str(root / "classes.txt"), "crop_size": 32, "batch_size": 2, "num_workers": 0, **kwargs}
    return SegmentationFolderDataModule(str(root / "images" / "train"), str(root / "masks" / "train"),
                                        str(root / "images" / "val"), str(root / "masks" / "val"), **kwargs)


def test_folder_pairs_by_name_with_a_suffix_and_a_split_list(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    (masks / "sub").mkdir(parents=True)
    (images / "sub").mkdir()
    for name in ("a", "b", "sub/c"):
        Image.new("RGB", (8, 6)).save(images / f"{name}.jpg")
        Image.new("L", (8, 6)).save(masks / f"{name}_mask.png")
    report = DatasetReport("pairs")
    samples = folder_samples(images, masks, mask_suffix="_mask", report=report)
    assert [s.name for s in samples] == ["a", "b", "sub/c"] and not report
    assert samples[2].mask == str(masks / "sub" / "c_mask.png")
    (tmp_path / "val.txt").write_text("b.jpg\n\nsub/c\n")
    assert [s.name for s in folder_samples(images, masks, mask_suffix="_mask", split_list=tmp_path / "val.txt",
                                           report=report)] == ["b", "sub/c"]
    # one folder for both: the suffix tells masks from images
    for name in ("a", "b"):
        Image.new("L", (8, 6)).save(images / f"{name}_mask.png")
    assert [s.name for s in folder_samples(images, images, mask_suffix="_mask", report=DatasetReport("one"))] == [
        "a", "b"]
    with pytest.raises(ValueError, match="mask_suffix"):
        folder_samples(images, images, report=DatasetReport("one"))


def write_bad_folder(root: Path) -> dict[str, str]:
    """A folder set whose val split holds one of every problem beside the two good pairs; returns kind -> file."""
    write_folder_set(root, num_train=2, num_val=2)
    images, masks = root / "images" / "val", root / "masks" / "val"
    Image.new("RGB", (20, 10)).save(images / "no_mask.jpg")
    save_l([[0, 1]], masks / "no_image.png")
    Image.new("RGB", (20, 10)).save(images / "wrong_size.jpg")
    Image.new("L", (10, 20)).save(masks / "wrong_size.png")
    Image.new("RGB", (4, 2)).save(images / "label_7.jpg")
    save_l([[0, 1], [7, 255]], masks / "label_7.png")
    Image.new("RGB", (4, 2)).save(images / "broken.jpg")
    (masks / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (4, 2)).save(images / "lossy.jpg")
    Image.new("L", (4, 2)).save(masks / "lossy.jpg")
    Image.new("RGB", (4, 2)).save(images / "coloured.jpg")
    Image.fromarray(np.full((2, 4, 3), 200, np.uint8)).save(masks / "coloured.png")
    return {"images without a mask": "no_mask.jpg", "masks without an image": "no_image.png",
            "masks of the wrong size": "wrong_size.png", "masks with labels out of range": "label_7.png",
            "unreadable masks": "broken.png", "JPEG masks": "lossy.jpg",
            "RGB masks without a colour table": "coloured.png"}


def test_folder_set_up_check_names_every_bad_file(tmp_path, capsys):
    expected = write_bad_folder(tmp_path)
    data = folder_module(tmp_path)
    with pytest.warns(DatasetWarning) as warned:
        data.setup("validate")
    summary = capsys.readouterr().out
    assert len(data.val_dataset) == 2  # the two good pairs
    for kind, name in expected.items():
        line = next((row for row in summary.splitlines() if kind in row), "")
        assert name in line, (kind, name, summary)
    assert "values [7] that are not labels 0..2 of 3 classes and void 255" in summary
    assert "label_7.png" in str(warned[0].message)
    with pytest.raises(DatasetError) as error:
        folder_module(tmp_path, strict=True).setup("validate")
    assert all(name in str(error.value) for name in expected.values())


def test_folder_module_reads_colour_masks_and_refuses_missing_folders(tmp_path):
    write_folder_set(tmp_path, num_train=2, num_val=1, colour=True)
    data = folder_module(tmp_path, classes=FOLDER_CLASSES, colors=FOLDER_COLOURS, ignore_colors=[VOID_COLOUR])
    data.setup("validate")
    _, mask = data.val_dataset[0]
    assert set(mask.unique().tolist()) == {0, 1, 2, 255}
    assert data.num_classes == 3 and data.class_names == tuple(FOLDER_CLASSES)
    empty = SegmentationFolderDataModule(classes=FOLDER_CLASSES, num_workers=0)
    with pytest.raises(ValueError, match="fit needs data.init_args.train_images and train_masks"):
        empty.setup("fit")
    with pytest.raises(FileNotFoundError, match=r"data.init_args.val_images='.*elsewhere/images/val' is not a folder"):
        folder_module(tmp_path / "elsewhere", classes=FOLDER_CLASSES).setup("validate")


# ------------------------------------------------------------------------------------------ Cityscapes, ADE20K


def test_cityscapes_layout_pairs_and_reports(tmp_path, capsys):
    root = write_cityscapes(tmp_path / "cityscapes")
    (root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000001_gtFine_labelIds.png").unlink()
    data = CityscapesDataModule(str(tmp_path), crop_size=32, num_workers=0)  # finds root/cityscapes too
    data.prepare_data()
    with pytest.warns(DatasetWarning, match="frankfurt_000000_000001_leftImg8bit.png"):
        data.setup("fit")
    assert len(data.train_dataset) == 4 and len(data.val_dataset) == 1
    assert "1 images without a mask" in capsys.readouterr().out
    _, mask = data.val_dataset[0]
    assert set(mask.unique().tolist()) == {0, 11, 13, 255}  # road, person, car; unlabeled and caravan void
    assert data.num_classes == 19
    with pytest.raises(FileNotFoundError, match=r"(?s)no Cityscapes.*leftImg8bit,gtFine.*trainvaltest"):
        CityscapesDataModule(str(tmp_path / "none")).prepare_data()


def test_ade20k_layout_reads_shifted_labels(tmp_path):
    write_ade20k(tmp_path, num_train=2, num_val=2)
    data = ADE20KDataModule(str(tmp_path), crop_size=32, num_workers=0)
    data.setup("validate")
    sizes = {tuple(data.val_dataset[i][0].shape[-2:]) for i in range(2)}
    assert len(sizes) == 2  # varied sizes, evaluated as they are
    assert set(data.val_dataset[0][1].unique().tolist()) == {255, 0, 149}
    assert data.num_classes == 150
    with pytest.raises(FileNotFoundError, match="ADEChallengeData2016"):
        ADE20KDataModule(str(tmp_path / "none")).prepare_data()
