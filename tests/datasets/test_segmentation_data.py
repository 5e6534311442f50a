"""VOC segmentation data on tiny written trees: layouts, trainaug from SBD (.mat and PNG), every bad input, collate."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenetv2_dense.datasets.checks import DatasetError, DatasetWarning
from mobilenetv2_dense.datasets.segmentation.dataset import SegmentationDataset, predict_collate, segmentation_collate
from mobilenetv2_dense.datasets.segmentation.shapes import SHAPES_CLASSES
from mobilenetv2_dense.datasets.segmentation.transforms import eval_transforms
from mobilenetv2_dense.datasets.segmentation.voc import (
    VOC_PALETTE,
    find_voc2012,
    read_list,
    read_mask,
    rgb_to_index,
    save_palette_png,
    voc_samples,
)
from mobilenetv2_dense.datasets.synthetic import SHAPE_CLASSES
from mobilenetv2_dense.tasks.segmentation.datamodule import ShapesVOCDataModule, VOCSegmentationDataModule
from tests.datasets.seg_fixtures import (
    NUM_TRAIN,
    NUM_VAL,
    SBD_ONLY,
    sbd_masks,
    voc_names,
    write_sbd_release,
    write_segmentation_class_aug,
    write_tiny_voc,
)


@pytest.fixture(scope="module")
def seg_voc_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny VOC tree, written once per module; tests change only their own copy."""
    return write_tiny_voc(tmp_path_factory.mktemp("voc_master"))


@pytest.fixture
def seg_voc(seg_voc_master: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny VOC tree: ``seg_voc/VOCdevkit/VOC2012``."""
    root = tmp_path / "voc"
    shutil.copytree(seg_voc_master, root)
    return root

def voc_dir(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


def module(root: Path, **kwargs) -> VOCSegmentationDataModule:
    kwargs = {"crop_size": 32, "batch_size": 2, "val_batch_size": 2, "num_workers": 0, **kwargs}
    return VOCSegmentationDataModule(str(root), **kwargs)


# ------------------------------------------------------------------------------------------ layout, palette


def test_find_voc2012_accepts_both_roots_and_names_the_layout(seg_voc, tmp_path):
    assert find_voc2012(seg_voc) == voc_dir(seg_voc)
    assert find_voc2012(voc_dir(seg_voc)) == voc_dir(seg_voc)
    with pytest.raises(FileNotFoundError, match=r"(?s)nowhere.*VOCdevkit/VOC2012.*JPEGImages"):
        find_voc2012(tmp_path / "nowhere")


def test_read_list_parses_names_and_path_pairs(tmp_path):
    lines = "2007_000032\n\n/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n"
    (tmp_path / "a.txt").write_text(lines)
    assert read_list(tmp_path / "a.txt") == ["2007_000032", "2007_000039"]


def test_voc_palette_matches_the_devkit_colours():
    # VOClabelcolormap.m: background, aeroplane, bicycle, person (15), tvmonitor (20), void (255)
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 15: (192, 128, 128), 20: (0, 64, 128),
                255: (224, 224, 192)}
    for index, colour in expected.items():
        assert tuple(VOC_PALETTE[index]) == colour
    assert len({tuple(c) for c in VOC_PALETTE}) == 256  # a bijection: every colour names one index


def test_rgb_mask_converts_through_the_palette_like_pil(tmp_path):
    labels = np.random.default_rng(0).choice([0, 3, 15, 20, 255], size=(17, 23)).astype(np.uint8)
    save_palette_png(labels, tmp_path / "p.png")
    Image.open(tmp_path / "p.png").convert("RGB").save(tmp_path / "rgb.png")  # PIL's own palette lookup
    assert np.array_equal(rgb_to_index(np.asarray(Image.open(tmp_path / "rgb.png"))), labels)
    mask, converted = read_mask(tmp_path / "rgb.png")
    assert converted and np.array_equal(mask, labels)
    assert np.array_equal(read_mask(tmp_path / "p.png")[0], labels)


# ------------------------------------------------------------------------------------------------ trainaug


def expected_trainaug(voc: Path) -> tuple[set[str], int]:
    """Hand set arithmetic: (VOC train | SBD train | SBD val) - VOC val, and how many val names were listed."""
    sbd = set(sbd_masks(voc))
    val = set(voc_names(voc, "val"))
    return (set(voc_names(voc, "train")) | sbd) - val, len((set(voc_names(voc, "train")) | sbd) & val)


@pytest.mark.parametrize("given", [True, False], ids=["sbd_root", "beside_VOCdevkit"])
def test_trainaug_from_the_sbd_release(seg_voc, tmp_path, capsys, given):
    voc = voc_dir(seg_voc)
    sbd_root = tmp_path / "sbd" if given else seg_voc
    write_sbd_release(sbd_root, voc)
    dm = module(seg_voc, sbd_root=str(sbd_root) if given else None)
    samples, removed = dm.train_samples()
    names, listed_val = expected_trainaug(voc)
    assert {s.name for s in samples} == names and len(samples) == NUM_TRAIN + len(SBD_ONLY)
    assert removed == listed_val == 2
    assert "removed 2 images of the val list" in capsys.readouterr().out
    by_name = {s.name: s for s in samples}
    # VOC's SegmentationClass mask wins for a name SBD also has; SBD-only names read the .mat and SBD's img/.
    assert by_name[voc_names(voc, "train")[0]].mask.endswith(f"SegmentationClass/{voc_names(voc, 'train')[0]}.png")
    assert by_name[SBD_ONLY[0]].mask.endswith(".mat") and "/dataset/img/" in by_name[SBD_ONLY[0]].image
    dm.setup("fit")
    index = [s.name for s in dm.train_dataset.samples].index(SBD_ONLY[0])
    mask, converted = read_mask(dm.train_dataset.samples[index].mask)
    assert not converted and np.array_equal(mask, sbd_masks(voc)[SBD_ONLY[0]][1])
    images, masks, _ = segmentation_collate([dm.train_dataset[index], dm.train_dataset[0]])
    assert images.shape == (2, 3, 32, 32) and masks.dtype == torch.int64


@pytest.mark.parametrize("line_style", ["name", "paths"])
@pytest.mark.parametrize("list_place", ["imagesets", "beside"])
def test_trainaug_from_segmentation_class_aug(seg_voc, line_style, list_place):
    voc = voc_dir(seg_voc)
    write_segmentation_class_aug(voc, line_style=line_style, list_place=list_place)
    samples, removed = module(seg_voc).train_samples()  # sbd_root=None: looks beside VOC
    names, listed_val = expected_trainaug(voc)
    assert {s.name for s in samples} == names and removed == listed_val
    by_name = {s.name: s for s in samples}
    assert by_name[SBD_ONLY[1]].mask.endswith(f"SegmentationClassAug/{SBD_ONLY[1]}.png")
    train0 = voc_names(voc, "train")[0]
    assert by_name[train0].mask.endswith(f"SegmentationClass/{train0}.png")


def test_trainaug_without_sbd_says_where_it_looked(seg_voc, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)empty.*dataset/\{cls.*train_split='train'"):
        module(seg_voc, sbd_root=str(tmp_path / "empty")).train_samples()


def test_train_split_removes_val_names_even_from_voc_train(seg_voc, capsys):
    voc = voc_dir(seg_voc)
    val = voc_names(voc, "val")
    train_list = voc / "ImageSets" / "Segmentation" / "train.txt"
    train_list.write_text(train_list.read_text() + val[0] + "\n")  # a careless list: one val image in train
    samples, removed = module(seg_voc, train_split="train").train_samples()
    assert removed == 1 and val[0] not in {s.name for s in samples} and len(samples) == NUM_TRAIN
    assert "removed 1 images" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- bad input


def break_size(voc: Path, name: str) -> str:
    mask = np.array(Image.open(voc / "SegmentationClass" / f"{name}.png"))
    save_palette_png(mask[:-3], voc / "SegmentationClass" / f"{name}.png")
    return "masks of the wrong size"


def break_labels(voc: Path, name: str) -> str:
    mask = np.array(Image.open(voc / "SegmentationClass" / f"{name}.png"))
    mask[0, 0] = 37
    save_palette_png(mask, voc / "SegmentationClass" / f"{name}.png")
    return "masks with labels out of range"


def break_colours(voc: Path, name: str) -> str:
    rgb = np.array(Image.open(voc / "SegmentationClass" / f"{name}.png").convert("RGB"))
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(voc / "SegmentationClass" / f"{name}.png")
    return "masks with colours outside the VOC palette"


def break_missing_image(voc: Path, name: str) -> str:
    (voc / "JPEGImages" / f"{name}.jpg").unlink()
    return "missing images"


def break_missing_mask(voc: Path, name: str) -> str:
    (voc / "SegmentationClass" / f"{name}.png").unlink()
    return "missing masks"


def break_truncated_image(voc: Path, name: str) -> str:
    path = voc / "JPEGImages" / f"{name}.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return "truncated images"


def break_unreadable_mask(voc: Path, name: str) -> str:
    (voc / "SegmentationClass" / f"{name}.png").write_bytes(b"not a png at all")
    return "unreadable masks"


BREAKERS = [break_size, break_labels, break_colours, break_missing_image, break_missing_mask,
            break_truncated_image, break_unreadable_mask]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__[6:])
def test_bad_sample_is_reported_skipped_or_raised(seg_voc, breaker, capsys):
    voc = voc_dir(seg_voc)
    name = voc_names(voc, "val")[1]
    kind = breaker(voc, name)
    samples = voc_samples(voc, "val")
    with pytest.warns(DatasetWarning, match=name):
        dataset = SegmentationDataset(samples, eval_transforms(), num_classes=len(SHAPES_CLASSES), name="val")
    assert [s.name for s in dataset.samples] == [s.name for s in samples if s.name != name]
    summary = capsys.readouterr().out
    assert f"{NUM_VAL} images, {NUM_VAL - 1} images kept" in summary
    assert f"1 {kind} (image skipped): " in summary and name in summary
    with pytest.raises(DatasetError, match=rf"(?s){kind}.*{name}"):
        SegmentationDataset(samples, eval_transforms(), num_classes=len(SHAPES_CLASSES), name="val", strict=True)


def test_rgb_mask_in_the_palette_is_converted_and_kept(seg_voc, capsys):
    voc = voc_dir(seg_voc)
    name = voc_names(voc, "val")[0]
    path = voc / "SegmentationClass" / f"{name}.png"
    labels = np.array(Image.open(path))
    Image.open(path).convert("RGB").save(path)
    dataset = SegmentationDataset(voc_samples(voc, "val"), eval_transforms(), num_classes=5, name="val", strict=True)
    assert "1 RGB masks converted" in capsys.readouterr().out
    assert torch.equal(dataset[0][1], torch.from_numpy(labels).long())


def test_decode_failure_at_load_time_warns_and_returns_another_sample(seg_voc):
    voc = voc_dir(seg_voc)
    dataset = SegmentationDataset(voc_samples(voc, "val"), eval_transforms(), num_classes=5, name="val")
    Path(dataset.samples[0].image).write_bytes(b"broken after the check")
    with pytest.warns(UserWarning, match=Path(dataset.samples[0].image).name):
        image, mask = dataset[0]
    expected = np.array(Image.open(dataset.samples[1].mask))
    assert torch.equal(mask, torch.from_numpy(expected).long()) and image.shape[-2:] == expected.shape


# ------------------------------------------------------------------------------------------------- collate


def test_segmentation_collate_pads_images_with_0_and_masks_with_255():
    a = (torch.randn(3, 5, 7), torch.randint(0, 21, (5, 7)))
    b = (torch.randn(3, 8, 4), torch.randint(0, 21, (8, 4)))
    images, masks, sizes = segmentation_collate([a, b])
    assert images.shape == (2, 3, 8, 7) and masks.shape == (2, 8, 7) and masks.dtype == torch.int64
    assert sizes == [(5, 7), (8, 4)]
    assert torch.equal(images[0, :, :5, :7], a[0]) and torch.equal(masks[1, :8, :4], b[1])
    assert (images[0, :, 5:] == 0).all() and (masks[0, 5:] == 255).all() and (masks[1, :, 4:] == 255).all()
    assert (masks == 255).sum() == 2 * 8 * 7 - 5 * 7 - 8 * 4  # exactly the padding is void


def test_predict_collate_keeps_paths_and_original_sizes():
    batch = predict_collate([(torch.ones(3, 4, 6), "a.jpg"), (torch.ones(3, 5, 2), "b.jpg")])
    assert batch["images"].shape == (2, 3, 5, 6) and batch["paths"] == ["a.jpg", "b.jpg"]
    assert batch["sizes"] == [(4, 6), (5, 2)] and batch["images"][1, :, :, 2:].abs().sum() == 0


# ------------------------------------------------------------------------------------- generated data module


def test_shapes_voc_reads_back_with_its_classes(tmp_path):
    dm = ShapesVOCDataModule(str(tmp_path / "shapes"), num_train=4, num_val=3, image_size=(40, 64), crop_size=32,
                             batch_size=2, val_batch_size=3, num_workers=0, predict_images=None)
    dm.prepare_data()
    assert dm.num_classes == 5 and dm.class_names == ("background", *SHAPE_CLASSES)
    voc = voc_dir(tmp_path / "shapes")
    masks = [Image.open(p) for p in sorted((voc / "SegmentationClass").glob("*.png"))]
    assert len(masks) == 7 and all(m.mode == "P" for m in masks)
    assert np.array_equal(np.array(masks[0].getpalette()).reshape(-1, 3), VOC_PALETTE)
    values = set(np.unique(np.concatenate([np.array(m).ravel() for m in masks])).tolist())
    assert values <= {0, 1, 2, 3, 4, 255} and 255 in values and len(values - {0, 255}) >= 2
    assert any(m.size[0] != m.size[1] for m in masks)  # not all square
    dm.setup("validate")
    images, labels, batch_sizes = next(iter(dm.val_dataloader()))
    sizes = [m.size[::-1] for m in masks[4:]]
    assert batch_sizes == sizes  # each image's own (h, w) travels with the padded batch
    assert images.shape[-2:] == tuple(max(s[i] for s in sizes) for i in (0, 1))  # full resolution, padded
    assert (labels[0, : sizes[0][0], : sizes[0][1]] == torch.from_numpy(np.array(masks[4])).long()).all()


def test_shapes_prepare_data_rewrites_half_written_trees_and_spares_foreign_ones(tmp_path):
    root = tmp_path / "shapes"
    dm = ShapesVOCDataModule(str(root), num_train=2, num_val=1, image_size=(32, 40), num_workers=0)
    dm.prepare_data()
    stamp = (voc_dir(root) / "ImageSets" / "Segmentation" / "train.txt").stat().st_mtime_ns
    dm.prepare_data()  # complete: untouched
    assert (voc_dir(root) / "ImageSets" / "Segmentation" / "train.txt").stat().st_mtime_ns == stamp
    (root / ".shapes_voc_complete").rename(root / ".shapes_voc_writing")  # as if stopped half-way
    (voc_dir(root) / "JPEGImages" / "stray.jpg").write_bytes(b"")
    dm.prepare_data()
    assert not (voc_dir(root) / "JPEGImages" / "stray.jpg").exists() and (root / ".shapes_voc_complete").is_file()
    assert len(read_list(voc_dir(root) / "ImageSets" / "Segmentation" / "trainval.txt")) == 3
    foreign = tmp_path / "real_voc"
    shutil.copytree(voc_dir(root), voc_dir(foreign))
    with pytest.raises(FileExistsError, match="not written by ShapesVOCDataModule"):
        ShapesVOCDataModule(str(foreign), num_train=2, num_val=1).prepare_data()
    assert voc_dir(foreign).is_dir()


def test_predict_images_folder(seg_voc):
    folder = voc_dir(seg_voc) / "JPEGImages"
    dm = module(seg_voc, predict_images=str(folder))
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    first = sorted(folder.glob("*.jpg"))[0]
    assert batch["paths"][0] == str(first)
    assert batch["sizes"][0] == Image.open(first).size[::-1]
