"""What ``predict_images`` accepts: a folder, an image file, a glob, a video file (frames streamed in order with
their index and time), written to disk as real files; and what it refuses, with the path and the fix named."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mobilenetv2_dense.datasets.checks import DatasetError, DatasetWarning
from mobilenetv2_dense.datasets.images import PredictImages, predict_dataset, predict_files
from mobilenetv2_dense.datasets.synthetic import render_scene
from mobilenetv2_dense.datasets.video import Frame, VideoFrames, VideoReadError, read_frames
from mobilenetv2_dense.tasks.detection.datamodule import COCODataModule
from mobilenetv2_dense.tasks.segmentation.datamodule import VOCSegmentationDataModule

HEIGHT, WIDTH, FRAMES, FPS = 48, 64, 6, 10.0


def write_video(path: Path, *, frames: int = FRAMES, fps: float = FPS, size: tuple[int, int] = (HEIGHT, WIDTH),
                seed: int = 0) -> Path:
    """``frames`` generated shape scenes as a video (MPEG-4 Part 2 for .mp4 / .mov, Motion JPEG otherwise: the
    encoders an opencv-python-headless wheel has)."""
    fourcc = "mp4v" if path.suffix in (".mp4", ".mov") else "MJPG"
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size[::-1])
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    for _ in range(frames):
        image, _ = render_scene(rng, *size)
        writer.write(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def keep(image: np.ndarray, meta: dict) -> tuple[tuple[int, ...], dict]:
    """A predict item builder that keeps the image's shape and the meta the dataset passes."""
    return image.shape, meta


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``photos/``: two images, a text file and a video at the top, one image in a subfolder."""
    folder = tmp_path_factory.mktemp("inputs") / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("a.jpg", "b.png", "sub/c.jpg"):
        Image.fromarray(render_scene(rng, HEIGHT, WIDTH)[0]).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    write_video(folder / "clip.mp4")
    return folder


# ------------------------------------------------------------------------------------------- what is read
def test_a_folder_a_file_and_globs_name_their_files(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = lambda files: [str(Path(f).relative_to(photos)) for f in files]  # noqa: E731
    kind, files = predict_files(photos)
    assert kind == "images" and names(files) == ["a.jpg", "b.png"]  # the images directly in it
    assert predict_files(photos / "b.png") == ("images", [str(photos / "b.png")])
    assert names(predict_files(f"{photos}/*.jpg")[1]) == ["a.jpg"]
    assert names(predict_files(f"{photos}/**/*.jpg")[1]) == ["a.jpg", "sub/c.jpg"]
    assert predict_files(photos / "clip.mp4") == ("videos", [str(photos / "clip.mp4")])
    monkeypatch.chdir(photos)
    assert predict_files("*.mp4") == ("videos", ["clip.mp4"])  # relative to the working directory


def test_a_folder_of_videos_alone_gives_its_videos(tmp_path: Path) -> None:
    write_video(tmp_path / "clips" / "b.avi")
    write_video(tmp_path / "clips" / "a.mp4")
    assert predict_files(tmp_path / "clips") == ("videos", [str(tmp_path / "clips" / n) for n in ("a.mp4", "b.avi")])


@pytest.mark.parametrize(("source", "error", "message"), [
    ("missing", FileNotFoundError, r"'.*missing' not found; pass a folder of images, an image file .*video file"),
    ("*.gif", FileNotFoundError, r"nothing matches the glob '.*\*\.gif'.*quote it"),
    ("notes.txt", ValueError, r"'.*notes\.txt' is neither an image nor a video file \(suffix '\.txt'\).*convert"),
    ("*", ValueError, r"the glob '.*\*' holds 2 images and 1 videos; predict them in two runs"),
])
def test_what_cannot_be_read_is_named_with_the_fix(photos: Path, source: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        predict_files(photos / source)


def test_a_folder_without_images_or_videos_points_at_a_glob(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "sub" / "deep.jpg")
    with pytest.raises(ValueError, match=r"folder '.*empty' holds no files, .*'folder/\*\*/\*\.jpg'"):
        predict_files(tmp_path / "empty")


def test_the_set_up_check_skips_broken_images_or_stops_under_strict(tmp_path: Path) -> None:
    Image.new("RGB", (20, 10), (200, 30, 30)).save(tmp_path / "good.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a JPEG" * 20)
    with pytest.warns(DatasetWarning, match=r"broken\.jpg"):
        dataset = predict_dataset(f"{tmp_path}/*.jpg", keep)
    assert isinstance(dataset, PredictImages) and len(dataset) == 1
    assert dataset[0] == ((10, 20, 3), {"path": str(tmp_path / "good.jpg"), "image_id": 0})
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        predict_dataset(f"{tmp_path}/*.jpg", keep, strict=True)


# ------------------------------------------------------------------------------------------------ videos
def test_video_frames_stream_in_order_with_index_and_time(photos: Path) -> None:
    dataset = predict_dataset(photos / "clip.mp4", keep)
    assert isinstance(dataset, VideoFrames) and dataset.frame_count == FRAMES
    items = list(dataset)
    assert len(items) == FRAMES
    for i, ((shape, meta), frame) in enumerate(items):
        assert shape == (HEIGHT, WIDTH, 3) and meta == {"path": str(photos / "clip.mp4"), "image_id": i}
        assert isinstance(frame, Frame) and frame.index == i and frame.fps == FPS
        assert frame.time == pytest.approx(i / FPS) and frame.image.dtype == np.uint8
    first = next(iter(read_frames(photos / "clip.mp4"))).image
    assert np.array_equal(items[0][1].image, first)  # the same decode every time


def test_an_undecodable_video_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(VideoReadError, match=r"cannot open video '.*broken\.mp4'.*re-encode it \(ffmpeg -i"):
        predict_dataset(tmp_path / "broken.mp4", keep)
    # one bad video among good ones is skipped and named, as a bad image is
    write_video(tmp_path / "good.avi", frames=2)
    with pytest.warns(DatasetWarning, match=r"broken\.mp4"):
        assert len(list(predict_dataset(f"{tmp_path}/*", keep))) == 2


def test_a_truncated_video_keeps_its_first_frames_and_says_so(tmp_path: Path) -> None:
    data = write_video(tmp_path / "whole.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 2 // 3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = list(read_frames(tmp_path / "cut.avi"))
    assert 0 < len(frames) < FRAMES
    assert any(f"decoded {len(frames)} of the {FRAMES} frames" in str(w.message) and "cut.avi" in str(w.message)
               for w in caught)


# ----------------------------------------------------------------------------------- through the data modules
def test_detection_batches_of_a_video_carry_each_frame(photos: Path) -> None:
    dm = COCODataModule(predict_images=str(photos / "clip.mp4"), image_size=32, batch_size=4, num_workers=2,
                        pin_memory=False)
    dm.setup("predict")
    loader = dm.predict_dataloader()
    assert loader.num_workers == 1  # one process decodes the stream in order
    batches = list(loader)
    assert [images.shape[0] for images, _ in batches] == [4, 2] and batches[0][0].shape[1:] == (3, 32, 32)
    targets = [t for _, batch in batches for t in batch]
    assert [t["frame"].index for t in targets] == [t["image_id"] for t in targets] == list(range(FRAMES))
    assert all(t["orig_size"].tolist() == [HEIGHT, WIDTH] and t["frame"].image.shape == (HEIGHT, WIDTH, 3)
               for t in targets)


def test_detection_batches_of_a_file_and_a_glob_carry_their_paths(photos: Path) -> None:
    for source, names in [(photos / "a.jpg", ["a.jpg"]), (f"{photos}/**/*.jpg", ["a.jpg", "c.jpg"])]:
        dm = COCODataModule(predict_images=str(source), image_size=32, batch_size=4, num_workers=0, pin_memory=False)
        dm.setup("predict")
        images, targets = next(iter(dm.predict_dataloader()))
        assert [Path(t["path"]).name for t in targets] == names and "frame" not in targets[0]
        assert images.shape == (len(names), 3, 32, 32)


def test_segmentation_batches_of_a_video_carry_frames_beside_paths(photos: Path, tmp_path: Path) -> None:
    dm = VOCSegmentationDataModule(str(tmp_path / "no_voc_here"), predict_images=str(photos / "clip.mp4"),
                                   val_batch_size=4, num_workers=0)
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [len(b["frames"]) for b in batches] == [4, 2]
    assert batches[0]["images"].shape == (4, 3, HEIGHT, WIDTH) and batches[0]["sizes"][0] == (HEIGHT, WIDTH)
    assert [f.index for b in batches for f in b["frames"]] == list(range(FRAMES))
    assert batches[0]["paths"] == [str(photos / "clip.mp4")] * 4
