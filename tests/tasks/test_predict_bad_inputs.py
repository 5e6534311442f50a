"""``predict`` on a folder of awkward files, through the entry point, for the detector, the segmenter and the joint
model: a text file and a zero-byte JPEG are named in one line and skipped; a 1x1 image, a 12000x9000 JPEG, a CMYK
JPEG, a 16-bit PNG, an animated GIF and an EXIF-rotated JPEG are predicted, every box inside the displayed image and
every mask of the displayed size (the huge image read scaled down to ``predict_max_pixels`` and mapped back)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.checks import DatasetError, DatasetWarning
from mobilenetv2_dense.datasets.images import PREDICT_MAX_PIXELS, predict_dataset, read_rgb, working_size
from tests.conftest import JOINT_POST, RED, joint_options, scene
from tests.datasets.test_predict_inputs import keep

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUIET = ["--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]
HUGE = (9000, 12000)  # (H, W): 108 Mpx, over PIL's 89.5-Mpx warning limit, under its 179-Mpx error
CAP = 128 * 128  # the runs' predict_max_pixels: the huge image goes through the network at 110x147
# (H, W) of each readable file as displayed; exif.jpg is stored 60 wide and 40 high, with orientation 6.
DISPLAYED = {"dot.png": (1, 1), "huge.jpg": HUGE, "cmyk.jpg": (32, 32), "deep.png": (48, 64), "anim.gif": (24, 32),
             "exif.jpg": (60, 40)}
UNREAD = ("predict: 2 of 8 files in '{folder}' could not be read and were skipped: empty.jpg (empty file), "
          "notes.txt (not an image)")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``photos/``: the six readable files of :data:`DISPLAYED`, a text file and an empty JPEG."""
    folder = tmp_path_factory.mktemp("awkward") / "photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (1, 1), RED).save(folder / "dot.png")
    with warnings.catch_warnings():  # PIL's decompression-bomb warning, for writing it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.new("RGB", HUGE[::-1], (70, 110, 160)).save(folder / "huge.jpg", quality=50)  # flat: 1.7 MB
    Image.fromarray(scene(32, 32, [((10, 4, 30, 14), RED)])).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)).save(folder / "deep.png")
    frames = [Image.new("RGB", (32, 24), colour) for colour in (RED, (20, 20, 230))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": stored 60 wide, 40 high
    Image.fromarray(scene(60, 40, [((5, 30, 25, 55), RED)])).transpose(Image.Transpose.ROTATE_90).save(
        folder / "exif.jpg", exif=exif)
    return folder


def working(name: str) -> tuple[int, int]:
    return working_size(DISPLAYED[name], CAP)


# ------------------------------------------------------------------------------------------ reading, no model
def test_each_awkward_file_reads_as_8_bit_rgb_as_displayed(awkward: Path) -> None:
    with pytest.warns(DatasetWarning, match="empty.jpg"):
        dataset = predict_dataset(awkward, keep, max_pixels=CAP)
    shapes = {Path(meta["path"]).name: shape for shape, meta in (dataset[i] for i in range(len(dataset)))}
    assert shapes == {name: (*working(name), 3) for name in DISPLAYED}
    deep = read_rgb(awkward / "deep.png")[..., 0]  # 16-bit samples scaled to 8 bits, not clipped at 255
    expected = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16) / 257
    assert np.abs(deep - expected).max() <= 1 and deep.max() == 255
    assert (read_rgb(awkward / "anim.gif") == RED).all()  # the first frame
    assert (np.abs(read_rgb(awkward / "cmyk.jpg")[8, 20].astype(int) - RED) < 30).all()


def test_the_default_limit_reads_the_huge_image_scaled_down(awkward: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # predict does not warn: it reads it reduced
        (shape, _), = [predict_dataset(awkward / "huge.jpg", keep)[0]]
    height, width, _ = shape
    assert height * width <= PREDICT_MAX_PIXELS and width / height == pytest.approx(12000 / 9000, rel=1e-3)
    assert height * width > 0.99 * PREDICT_MAX_PIXELS


def test_strict_stops_on_the_empty_file_not_on_the_text_file(awkward: Path) -> None:
    with pytest.raises(DatasetError, match="empty.jpg: empty file") as error:
        predict_dataset(awkward, keep, strict=True)
    assert "notes.txt" not in str(error.value)


# ------------------------------------------------------------------------------------------ through the CLI
def detector(shapes_coco: Path, request: pytest.FixtureRequest) -> tuple[list[str], str]:
    """A randomly initialised detector (the shapes' classes from ``shapes_coco``'s annotations)."""
    return ["--config", str(CONFIGS / "ssdlite_mobilenetv2_coco.yaml"), *QUIET, "--data.init_args.root",
            str(shapes_coco), "--data.init_args.image_size", "64", "--data.init_args.num_workers", "0",
            "--model.init_args.backbone.width_mult", "0.35", *JOINT_POST], "ssdlite_mobilenetv2_coco"


def segmenter(shapes_coco: Path, request: pytest.FixtureRequest) -> tuple[list[str], str]:
    """A randomly initialised segmenter of the shapes' classes."""
    return ["--config", str(CONFIGS / "deeplabv3lite_shapes_demo.yaml"), *QUIET, "--data.init_args.num_train", "2",
            "--data.init_args.num_val", "1", "--data.init_args.image_size", "[48, 64]",
            "--data.init_args.num_workers", "0", "--data.init_args.val_batch_size", "4",
            "--model.init_args.backbone.width_mult", "0.35", "--model.init_args.channels_last", "false"], \
        "deeplabv3lite_shapes_demo"


def joint(shapes_coco: Path, request: pytest.FixtureRequest) -> tuple[list[str], str]:
    """The joint model of the short fit the joint tests share (``joint_run``)."""
    checkpoint = request.getfixturevalue("joint_run")[1]
    return [*joint_options(shapes_coco), "--ckpt_path", str(checkpoint)], "ssdlite_deeplabv3lite_coco"


def check_boxes(out: Path) -> None:
    """Every box of ``predictions.json`` inside its displayed image; the EXIF image's and the huge image's reach
    past what they could if read as stored (40 high) or left in the pixels of their working size."""
    boxes: dict[str, list[list[float]]] = {}
    for result in json.loads((out / "predictions.json").read_text()):
        boxes.setdefault(result["file_name"], []).append(result["bbox"])
    assert set(boxes) <= set(DISPLAYED)
    reach = {}
    for name, xywh in boxes.items():
        x, y, w, h = np.array(xywh).T
        height, width = DISPLAYED[name]
        assert (x >= -1e-3).all() and (y >= -1e-3).all() and (x + w <= width + 1e-3).all(), name
        assert (y + h <= height + 1e-3).all(), name
        reach[name] = (y + h).max(), (x + w).max()
    assert reach["exif.jpg"][0] > 40  # displayed 60 high
    assert min(reach["huge.jpg"]) > max(working("huge.jpg"))  # in the full image's pixels


@pytest.mark.parametrize("task", [detector, segmenter, joint])
def test_predict_skips_what_it_cannot_read_and_predicts_the_rest(task, awkward: Path, shapes_coco: Path,
                                                                  request: pytest.FixtureRequest, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    options, experiment = task(shapes_coco, request)
    monkeypatch.chdir(tmp_path)  # the configs' relative runs/ land there
    out = tmp_path / "runs" / experiment / "predictions"
    capsys.readouterr()
    with pytest.warns(DatasetWarning, match="notes.txt"):
        cli_main(["predict", *options, "--data.init_args.predict_images", str(awkward),
                  "--data.init_args.predict_max_pixels", str(CAP)])
    printed = capsys.readouterr().out
    assert printed.count("could not be read") == 1 and UNREAD.format(folder=awkward) in printed

    if task is not segmenter:
        check_boxes(out)
        pictures = {name: Image.open(out / f"{Path(name).stem}.jpg").size[::-1] for name in DISPLAYED}
        assert pictures == {name: working(name) for name in DISPLAYED}  # drawn on the image predict saw
    if task is not detector:
        masks = {name: Image.open(out / "masks" / f"{Path(name).stem}.png").size[::-1] for name in DISPLAYED}
        assert masks == DISPLAYED  # the huge image's too, though predicted at 110x147
        assert len(list((out / "masks").iterdir())) == len(DISPLAYED)
    if task is segmenter:
        overlays = {name: Image.open(out / "overlays" / f"{Path(name).stem}.jpg").size[::-1] for name in DISPLAYED}
        assert overlays == {name: working(name) for name in DISPLAYED}
