"""What ``predict`` writes for a video: the annotated frames as a video at the source's frame rate and size, and a
JSON file with one record per frame, both written as the frames arrive (nothing held for the whole video).

For a source ``clip.mov`` the writers produce ``<output_dir>/clip.mp4`` and ``<output_dir>/clip.frames.json``::

    {"video": "clips/clip.mov", "fps": 25.0, "width": 640, "height": 360,
     "frames": [{"frame": 0, "time": 0.0, ...the task's record...}, ...]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
from torch import Tensor

from ..datasets.video import Frame

# MPEG-4 Part 2 in MP4: the encoder every opencv-python(-headless) wheel's FFmpeg has (H.264 is not in them).
FOURCC, VIDEO_SUFFIX = "mp4v", ".mp4"
# The rate a video is written at when its container states none.
DEFAULT_FPS = 25.0


class VideoFile:
    """A video written frame by frame: ``write`` takes ``(H, W, 3)`` uint8 RGB arrays (or ``(3, H, W)`` tensors,
    as :func:`~mobilenetv2_dense.pictures.detection.draw_detections` returns) of the ``size`` ``(H, W)`` given."""

    def __init__(self, path: str | Path, *, fps: float, size: tuple[int, int]) -> None:
        self.path, self.size = Path(path), tuple(size)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        height, width = self.size
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*FOURCC), float(fps), (width, height))
        if not self._writer.isOpened():
            raise OSError(f"VideoFile: OpenCV cannot write {str(self.path)!r} ({FOURCC!r} at {fps} fps, {width}x"
                          f"{height}); check that the folder is writable and that opencv-python-headless is installed")
        self.frames = 0

    def write(self, image: np.ndarray | Tensor) -> None:
        if isinstance(image, Tensor):
            image = image.detach().cpu().permute(1, 2, 0).numpy()  # (3, H, W) -> (H, W, 3)
        if image.shape != (*self.size, 3) or image.dtype != np.uint8:
            raise ValueError(f"VideoFile({str(self.path)!r}): frame {self.frames} is {image.dtype} {image.shape}, "
                             f"expected uint8 {(*self.size, 3)}: every frame of a video has the first one's size")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        self._writer.release()


class FrameLog:
    """The per-frame JSON of one video (see the module docstring), streamed: the header first, one record per
    :meth:`add`, the closing brackets in :meth:`close`, so the file is valid JSON once closed."""

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = self.path.open("w")
        self._file.write(json.dumps(header)[:-1] + ', "frames": [')
        self.records = 0

    def add(self, record: dict[str, Any]) -> None:
        self._file.write(("," if self.records else "") + "\n" + json.dumps(record))
        self.records += 1

    def close(self) -> None:
        self._file.write("\n]}\n")
        self._file.close()


class VideoPredictions:
    """The outputs of every video a ``predict`` run reads, one video at a time: :meth:`add` takes each frame in
    order with its picture (``None``: no video is written, only the JSON) and its record, and opens the next
    video's files when the source changes.

    Outputs are named after the source's stem (``clip.mp4``, ``clip.frames.json``; ``clip-2.*`` for a second
    source of that stem); one that would overwrite its own source is refused, naming the fix.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.written: list[tuple[str, int, list[Path]]] = []  # (source, frames, files) of each closed video
        self._source: str | None = None
        self._video: VideoFile | None = None
        self._log: FrameLog | None = None
        self._stems: set[str] = set()

    def add(self, frame: Frame, picture: np.ndarray | Tensor | None, record: dict[str, Any]) -> None:
        if frame.path != self._source:
            self.close()
            self._open(frame, with_video=picture is not None)
        expected = self._log.records
        if frame.index != expected:
            raise RuntimeError(f"VideoPredictions: frame {frame.index} of {frame.path!r} arrived where frame "
                               f"{expected} was due; a video is predicted in order, by one process and one loader "
                               "worker")
        if self._video is not None and picture is not None:
            self._video.write(picture)
        self._log.add({"frame": frame.index, "time": round(frame.time, 6), **record})

    def _open(self, frame: Frame, *, with_video: bool) -> None:
        stem, n = Path(frame.path).stem, 2
        name = stem
        while name in self._stems:
            name, n = f"{stem}-{n}", n + 1
        self._stems.add(name)
        video_path = self.folder / f"{name}{VIDEO_SUFFIX}"
        if video_path.resolve() == Path(frame.path).resolve():
            raise ValueError(f"VideoPredictions: the annotated video would overwrite its source {frame.path!r}; "
                             "write the predictions to another folder (the writer's output_dir)")
        height, width = frame.image.shape[:2]
        fps = frame.fps or DEFAULT_FPS
        self._source = frame.path
        self._video = VideoFile(video_path, fps=fps, size=(height, width)) if with_video else None
        self._log = FrameLog(self.folder / f"{name}.frames.json",
                             {"video": frame.path, "fps": fps, "width": width, "height": height})

    def close(self) -> None:
        """Finish the open video's files (call at the end of the run; safe to call twice)."""
        if self._log is None:
            return
        files = [self._log.path]
        self._log.close()
        if self._video is not None:
            self._video.close()
            files.insert(0, self._video.path)
        self.written.append((self._source, self._log.records, files))
        self._source, self._video, self._log = None, None, None

    def summary(self) -> str:
        """``"2 videos (250 frames) -> clip.mp4, clip.frames.json, ..."`` for the writer's log line."""
        names = ", ".join(path.name for _, _, files in self.written for path in files)
        return f"{len(self.written)} videos ({sum(n for _, n, _ in self.written)} frames) -> {names}"


def class_pixels(mask: np.ndarray | Tensor, class_names: Sequence[str] | None) -> dict[str, int]:
    """``{class name: pixels}`` of the labels present in an ``(H, W)`` index mask (255 = void, named ``"void"``);
    labels without a name are named by their index."""
    if isinstance(mask, Tensor):
        mask = mask.cpu().numpy()
    counts = np.bincount(np.asarray(mask, dtype=np.int64).ravel(), minlength=256)
    names = list(class_names or [])
    name = lambda k: names[k] if k < len(names) else ("void" if k == 255 else str(k))  # noqa: E731
    return {name(k): int(counts[k]) for k in np.flatnonzero(counts)}
