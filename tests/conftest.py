"""Fixtures shared by every test folder: one thread for tiny tensors, and tiny COCO-format and VOC trees written
to disk as real files (for ``tests/datasets`` and the task tests that train on them).

Every image is a uniform background with solid rectangles, so a test can find an object's pixels by colour.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenetv2_dense.datasets.classification.shapes import write_image_folder

RED, GREEN, BLUE, GRAY = (230, 20, 20), (20, 230, 20), (20, 20, 230), (90, 90, 90)
CATEGORIES = [{"id": 2, "name": "red"}, {"id": 5, "name": "green"}, {"id": 11, "name": "blue"}]  # ids with gaps


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs one worker per core), each worker gets its share of the cores, for
    torch and for the processes it starts: two workers of two OpenMP threads each on two cores spin against each
    other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def scene(height: int, width: int, rects: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]]) -> np.ndarray:
    """``(H, W, 3)`` uint8 gray image with filled ``((x0, y0, x1, y1), colour)`` rectangles (x1, y1 exclusive)."""
    image = np.full((height, width, 3), GRAY, dtype=np.uint8)
    for (x0, y0, x1, y1), colour in rects:
        image[y0:y1, x0:x1] = colour
    return image


def write_coco_json(path: Path, images: list[dict], annotations: list[dict]) -> Path:
    for k, ann in enumerate(annotations, start=1):
        ann.setdefault("id", k)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def write_good_coco(root: Path) -> Path:
    """``root/images`` + ``root/instances.json``: six images covering the colour modes, a crowd box, a negative
    and an EXIF-rotated JPEG whose boxes are in the displayed (rotated) frame, as COCO stores them."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    Image.fromarray(scene(48, 64, [((4, 6, 24, 30), RED), ((40, 10, 60, 40), BLUE)])).save(images_dir / "a.png")
    Image.fromarray(scene(40, 40, [])).save(images_dir / "negative.png")
    Image.fromarray(scene(32, 32, [((8, 8, 16, 24), RED)])).convert("L").save(images_dir / "gray.png")
    rgba = np.dstack([scene(32, 32, [((2, 2, 12, 12), GREEN)]), np.full((32, 32), 255, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(images_dir / "rgba.png")
    Image.fromarray(scene(32, 32, [((10, 4, 30, 14), BLUE)])).convert("CMYK").save(images_dir / "cmyk.jpg", quality=95)
    # Displayed: 40 wide, 60 high, red patch at x 5..25, y 30..55. Stored sideways with EXIF orientation 6
    # ("rotate 90 degrees clockwise to display"), so the raw pixels are 60 wide and 40 high.
    display = Image.fromarray(scene(60, 40, [((5, 30, 25, 55), RED)]))
    exif = Image.Exif()
    exif[0x0112] = 6
    display.transpose(Image.Transpose.ROTATE_90).save(images_dir / "exif.jpg", quality=95, subsampling=0,
                                                        exif=exif)
    images = [{"id": 10, "file_name": "a.png", "height": 48, "width": 64},
              {"id": 20, "file_name": "negative.png", "height": 40, "width": 40},
              {"id": 30, "file_name": "gray.png", "height": 32, "width": 32},
              {"id": 40, "file_name": "rgba.png", "height": 32, "width": 32},
              {"id": 50, "file_name": "cmyk.jpg", "height": 32, "width": 32},
              {"id": 60, "file_name": "exif.jpg", "height": 60, "width": 40}]
    annotations = [{"image_id": 10, "category_id": 2, "bbox": [4, 6, 20, 24]},
                   {"image_id": 10, "category_id": 11, "bbox": [40, 10, 20, 30]},
                   {"image_id": 10, "category_id": 5, "bbox": [0, 0, 64, 48], "iscrowd": 1},
                   {"image_id": 30, "category_id": 2, "bbox": [8, 8, 8, 16]},
                   {"image_id": 40, "category_id": 5, "bbox": [2, 2, 10, 10]},
                   {"image_id": 50, "category_id": 11, "bbox": [10, 4, 20, 10]},
                   {"image_id": 60, "category_id": 2, "bbox": [5, 30, 20, 25]}]
    return write_coco_json(root / "instances.json", images, annotations)


def write_bad_coco(root: Path) -> Path:
    """A tree with one of every set-up problem next to two good images (``ok.png`` 40x40, ``resized.png``)."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    Image.fromarray(scene(40, 40, [((5, 5, 20, 20), RED)])).save(images_dir / "ok.png")
    Image.fromarray(scene(30, 50, [((5, 5, 20, 20), RED)])).save(images_dir / "resized.png")  # json says 60x100
    Image.fromarray(scene(64, 64, [])).save(images_dir / "truncated.jpg", quality=95)
    data = (images_dir / "truncated.jpg").read_bytes()
    (images_dir / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (images_dir / "garbage.jpg").write_bytes(b"this is not a JPEG file at all" * 10)
    images = [{"id": 1, "file_name": "ok.png", "height": 40, "width": 40},
              {"id": 2, "file_name": "resized.png", "height": 60, "width": 100},
              {"id": 3, "file_name": "truncated.jpg", "height": 64, "width": 64},
              {"id": 4, "file_name": "garbage.jpg", "height": 64, "width": 64},
              {"id": 5, "file_name": "missing.jpg", "height": 64, "width": 64}]
    annotations = [{"image_id": 1, "category_id": 2, "bbox": [5, 5, 15, 15]},  # good
                   {"image_id": 1, "category_id": 5, "bbox": [10, 10, 0, 8]},  # zero width
                   {"image_id": 1, "category_id": 11, "bbox": [30, 30, 25, 5]},  # x1 = 55 > 40: clipped to 40
                   {"image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown category
                   {"image_id": 1, "category_id": 2, "bbox": [45, 45, 10, 10]},  # wholly outside a 40x40 image
                   {"image_id": 2, "category_id": 2, "bbox": [5, 5, 15, 15]},
                   {"image_id": 2, "category_id": 5, "bbox": [40, 20, 50, 30]},  # inside 100x60, past 50x30
                   {"image_id": 3, "category_id": 2, "bbox": [1, 1, 5, 5]},
                   {"image_id": 777, "category_id": 2, "bbox": [1, 1, 5, 5]}]  # image not in the json
    return write_coco_json(root / "instances.json", images, annotations)


VOC_XML = """<annotation><folder>VOC2012</folder><filename>{name}.jpg</filename>
<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{objects}</annotation>"""
VOC_OBJECT = """<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated>
<difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>
</bndbox></object>"""


def write_voc(root: Path) -> Path:
    """``root/VOC2012`` with train (2 images) and val (1 image) lists; 1-based inclusive corners in the XML.

    ``v0``: a cat over pixel columns 4..23 / rows 6..29 (0-based), so xmin=5, ymin=7, xmax=24, ymax=30 in the XML,
    and a difficult dog; ``v1``: a person; ``v2`` (val): a car and a difficult bottle.
    """
    voc = root / "VOC2012"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    specs = {"v0": (48, 64, [("cat", 0, (4, 6, 24, 30), RED), ("dog", 1, (40, 10, 60, 40), BLUE)]),
             "v1": (40, 40, [("person", 0, (10, 10, 30, 35), GREEN)]),
             "v2": (50, 50, [("car", 0, (0, 0, 20, 20), RED), ("bottle", 1, (30, 30, 50, 50), BLUE)])}
    for name, (height, width, objects) in specs.items():
        Image.fromarray(scene(height, width, [(box, colour) for _, _, box, colour in objects])).save(
            voc / "JPEGImages" / f"{name}.jpg", quality=95, subsampling=0)
        xml_objects = "".join(VOC_OBJECT.format(cls=cls, difficult=difficult, x1=x0 + 1, y1=y0 + 1, x2=x1, y2=y1)
                              for cls, difficult, (x0, y0, x1, y1), _ in objects)
        (voc / "Annotations" / f"{name}.xml").write_text(
            VOC_XML.format(name=name, width=width, height=height, objects=xml_objects))
    (voc / "ImageSets/Main/train.txt").write_text("v0\nv1\n")
    (voc / "ImageSets/Main/val.txt").write_text("v2\n")
    return voc


@pytest.fixture(scope="session")
def good_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of the instances json of :func:`write_good_coco` (read-only: copy it before changing files)."""
    return write_good_coco(tmp_path_factory.mktemp("good_coco"))


@pytest.fixture
def bad_coco(tmp_path: Path) -> Path:
    return write_bad_coco(tmp_path / "bad_coco")


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``VOCdevkit`` folder holding the ``VOC2012`` tree of :func:`write_voc`."""
    root = tmp_path_factory.mktemp("VOCdevkit")
    write_voc(root)
    return root


@pytest.fixture(scope="session")
def shapes_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated shapes dataset in the COCO 2017 layout (read-only)."""
    from mobilenetv2_dense.datasets.detection.shapes import (
        write_shapes_coco,  # here, so other tests never import detection code
    )

    return write_shapes_coco(tmp_path_factory.mktemp("shapes") / "coco", num_train=24, num_val=8, image_size=96,
                             seed=3)


@pytest.fixture
def copy_tree(tmp_path: Path):
    """``copy_tree(src) -> a writable copy`` of a session fixture's folder."""
    return lambda src: Path(shutil.copytree(src, tmp_path / Path(src).name))


@pytest.fixture(scope="session")
def tiny_shapes_folder(tmp_path_factory) -> Path:
    """A complete ``ShapesImageFolderDataModule`` tree: 4 classes x 6 images of 32x32 (16 train, 8 val), read-only."""
    # its marker (.complete) tells ShapesImageFolderDataModule not to write the set again
    return write_image_folder(tmp_path_factory.mktemp("folder"), images_per_class=6, image_size=32)


@pytest.fixture
def one_thread():
    """For modules of tiny tensors: one thread is faster and avoids OpenMP spin-waits on a shared, busy machine.

    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The joint detection + segmentation run shared by tests/tasks/test_joint_task.py and tests/deploy/test_joint_export.py:
# the COCO joint config on the generated shapes (COCO layout, RLE outlines), width 0.35, 64x64 inputs.
JOINT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "ssdlite_deeplabv3lite_coco.yaml")
JOINT_POST = ["--model.init_args.post_processing.topk_candidates", "30",
              "--model.init_args.post_processing.detections_per_img", "10"]


def joint_options(root: Path) -> list[str]:
    """The joint config's data on ``root`` (a ``shapes_coco`` tree) at 64x64, quiet, no workers, few candidates."""
    return ["--config", JOINT_CONFIG, "--data.init_args.root", str(root), "--data.init_args.image_size", "64",
            "--data.init_args.num_workers", "0", "--data.init_args.pin_memory", "false",
            "--data.init_args.batch_size", "4", "--data.init_args.val_batch_size", "4",
            "--model.init_args.backbone.width_mult", "0.35", "--model.init_args.segmentation_loss.dice_weight", "0.5",
            *JOINT_POST,
            "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]


@pytest.fixture(scope="session")
def joint_run(shapes_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder, last.ckpt) of the joint model fitted 4 steps through the CLI on :func:`shapes_coco`."""
    from mobilenetv2_dense.commands.cli import cli_main

    folder = tmp_path_factory.mktemp("joint_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: see one_thread (a session fixture runs before it)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)  # the config's relative runs/ land there
            cli_main(["fit", *joint_options(shapes_coco), "--trainer.max_steps", "4",
                      "--trainer.limit_val_batches", "0"])
    finally:
        torch.set_num_threads(threads)
    return folder, next(folder.rglob("last.ckpt"))
