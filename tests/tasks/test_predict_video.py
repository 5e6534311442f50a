"""``predict`` on what users have, through the entry point: a video file, a glob of videos, an image file and a glob
of images, with checkpoints of short fits; the annotated video keeps the source's frame count, size and rate, and
the per-frame JSON has one entry per frame, for the detector, the segmenter and the joint model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest

from mobilenetv2_dense.commands.cli import cli_main
from mobilenetv2_dense.datasets.synthetic import SHAPE_CLASSES
from tests.conftest import joint_options
from tests.datasets.test_predict_inputs import write_video

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
QUIET = ["--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0"]
FRAMES, SIZE, FPS = 5, (48, 64), 10.0

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``clip.mp4`` (5 frames, 48x64, 10 fps) and ``other.avi`` (3 frames, 40x56, 4 fps) of generated shapes."""
    folder = tmp_path_factory.mktemp("clips")
    write_video(folder / "clip.mp4", frames=FRAMES, size=SIZE, fps=FPS)
    write_video(folder / "other.avi", frames=3, size=(40, 56), fps=4.0, seed=1)
    return folder


def read_back(video: Path) -> tuple[int, tuple[int, int], float]:
    """``(frames decoded, (H, W), fps)`` of a written video."""
    capture = cv2.VideoCapture(str(video))
    frames, size = 0, None
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames, size = frames + 1, image.shape[:2]
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, size, fps


def frame_records(out: Path, source: Path, *, frames: int, size: tuple[int, int], fps: float,
                  video: bool = True) -> list[dict]:
    """Check ``<stem>.mp4`` against the source (frames, size, rate) and return the entries of ``<stem>.frames.json``,
    one per frame, in order, with the frame's time."""
    if video:
        assert read_back(out / f"{source.stem}.mp4") == (frames, size, pytest.approx(fps))
    log = json.loads((out / f"{source.stem}.frames.json").read_text())
    assert log["video"] == str(source) and log["fps"] == pytest.approx(fps)
    assert (log["height"], log["width"]) == size
    assert [r["frame"] for r in log["frames"]] == list(range(frames))
    assert [r["time"] for r in log["frames"]] == pytest.approx([i / fps for i in range(frames)])
    return log["frames"]


def check_detections(records: list[dict], category_ids: set[int]) -> None:
    detections = [d for r in records for d in r["detections"]]
    assert detections, "an untrained detector still scores some boxes above the post-processing threshold"
    assert {d["category_id"] for d in detections} <= category_ids
    assert {d["category"] for d in detections} <= set(SHAPE_CLASSES)
    assert all(len(d["bbox"]) == 4 and 0 <= d["score"] <= 1 for d in detections)


# ---------------------------------------------------------------------------------------------------- detector
def test_detector_predicts_a_video_an_image_file_and_a_glob(shapes_coco: Path, clips: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = str(CONFIGS / "ssdlite_mobilenetv2_coco.yaml")
    small = ["--config", config, *QUIET, "--data.init_args.image_size", "64", "--data.init_args.num_workers", "0",
             "--data.init_args.pin_memory", "false", "--data.init_args.val_batch_size", "4",
             "--model.init_args.post_processing.topk_candidates", "30",
             "--model.init_args.post_processing.detections_per_img", "10"]
    cli_main(["fit", *small, "--data.init_args.root", str(shapes_coco), "--data.init_args.batch_size", "4",
              "--model.init_args.num_classes", "4", "--model.init_args.backbone.width_mult", "0.35",
              "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"])
    predict = [*small, "--ckpt_path", str(next((tmp_path / "runs").rglob("last.ckpt"))),
               "--data.init_args.root", str(tmp_path / "no_coco_here")]  # classes from the checkpoint
    out = tmp_path / "runs" / "ssdlite_mobilenetv2_coco" / "predictions"

    cli_main(["predict", *predict, "--data.init_args.predict_images", str(clips / "clip.mp4")])
    records = frame_records(out, clips / "clip.mp4", frames=FRAMES, size=SIZE, fps=FPS)
    check_detections(records, {1, 3, 7, 9})  # the shapes' gapped COCO ids
    assert not (out / "predictions.json").exists()  # video frames are not COCO results of images

    photos = tmp_path / "photos"
    shutil.copytree(shapes_coco / "val2017", photos / "val")
    files = sorted((photos / "val").glob("*.jpg"))
    cli_main(["predict", *predict, "--data.init_args.predict_images", str(files[0])])
    assert sorted(out.glob("*.jpg")) == [out / f"{files[0].stem}.jpg"]
    assert {r["file_name"] for r in json.loads((out / "predictions.json").read_text())} <= {files[0].name}
    cli_main(["predict", *predict, "--data.init_args.predict_images", f"{photos}/**/*.jpg"])
    assert {r["file_name"] for r in json.loads((out / "predictions.json").read_text())} <= {f.name for f in files}
    assert all((out / f"{f.stem}.jpg").is_file() for f in files)

    with pytest.raises(FileNotFoundError, match=r"nothing matches the glob '.*photos/\*\.png'"):
        cli_main(["predict", *predict, "--data.init_args.predict_images", f"{photos}/*.png"])


# --------------------------------------------------------------------------------------------------- segmenter
def test_segmenter_writes_the_overlay_video_and_the_pixels_of_each_class(clips: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = str(CONFIGS / "deeplabv3lite_shapes_demo.yaml")
    data = ["--config", config, *QUIET, "--data.init_args.num_train", "2", "--data.init_args.num_val", "1",
            "--data.init_args.image_size", "[48, 64]", "--data.init_args.crop_size", "48",
            "--data.init_args.batch_size", "2", "--data.init_args.val_batch_size", "2",
            "--data.init_args.num_workers", "0", "--model.init_args.channels_last", "false"]
    cli_main(["fit", *data, "--model.init_args.backbone.width_mult", "0.35", "--trainer.max_steps", "1",
              "--trainer.limit_val_batches", "0"])
    checkpoint = next((tmp_path / "runs").rglob("last.ckpt"))
    predict = cli_main(["predict", *data, "--ckpt_path", str(checkpoint), "--data.init_args.predict_images",
                        str(clips / "clip.mp4")])
    assert not predict.trainer.predict_loop.predictions  # a video's masks go to files, not also to memory
    out = tmp_path / "runs" / "deeplabv3lite_shapes_demo" / "predictions"
    records = frame_records(out, clips / "clip.mp4", frames=FRAMES, size=SIZE, fps=FPS)
    assert all(sum(r["pixels"].values()) == SIZE[0] * SIZE[1] for r in records)  # every pixel, one class each
    assert set().union(*(r["pixels"] for r in records)) <= {"background", *SHAPE_CLASSES}
    assert not (out / "masks").exists()  # a summary per frame, not a PNG per frame


# ------------------------------------------------------------------------------------------------- joint model
def test_joint_model_draws_boxes_and_colours_on_each_video_of_a_glob(joint_run: tuple[Path, Path], shapes_coco: Path,
                                                                     clips: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder, checkpoint = joint_run
    monkeypatch.chdir(folder)
    cli_main(["predict", *joint_options(shapes_coco), "--ckpt_path", str(checkpoint),
              "--data.init_args.predict_images", f"{clips}/*"])
    out = folder / "runs" / "ssdlite_deeplabv3lite_coco" / "predictions"
    for source, frames, size, fps in [(clips / "clip.mp4", FRAMES, SIZE, FPS), (clips / "other.avi", 3, (40, 56), 4.0)]:
        records = frame_records(out, source, frames=frames, size=size, fps=fps)
        assert all(sum(r["pixels"].values()) == size[0] * size[1] for r in records)
        assert all(isinstance(r["detections"], list) for r in records)
    check_detections(records, {1, 3, 7, 9})
