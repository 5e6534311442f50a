"""Video files as predict samples: frames decoded one at a time with OpenCV, never the whole video in memory.

:class:`VideoFrames` streams the frames of one or more videos, in order, as the task's predict items. Each item
travels with its :class:`Frame` (the source file, the frame index, the time in seconds, the frame rate and the
decoded ``(H, W, 3)`` uint8 RGB pixels), which :class:`FrameCollate` hands to the batch, so a prediction writer can
draw on the original frame and write the annotated video at the source's rate and size. A batch of frames is the
task's own batch plus ``"frames"`` (a dict batch) or a ``"frame"`` key in each target (an ``(images, targets)``
batch); :func:`batch_frames` reads either.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from .checks import DatasetReport, DatasetWarning

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# What the error messages suggest for a file OpenCV's FFmpeg cannot read: re-encoding it to H.264 in MP4.
_REENCODE = "re-encode it (ffmpeg -i {path} -c:v libx264 -pix_fmt yuv420p fixed.mp4) or pass its frames as images"


class VideoReadError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file and the fix."""


class Frame(NamedTuple):
    """One decoded frame and where it comes from. ``image``: ``(H, W, 3)`` uint8 RGB (a numpy array, so Lightning
    leaves it on the CPU when it moves the batch to the device); ``time``: seconds from the start of the video."""

    path: str
    index: int
    time: float
    fps: float
    image: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """What a video's container says: frames per second, frame count (an estimate in some containers, 0 when it
    does not say) and the ``(height, width)`` of its first decoded frame."""

    path: str
    fps: float
    frame_count: int
    size: tuple[int, int]


def _open(path: str | Path) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise VideoReadError(f"video {str(path)!r} not found; check the path given to predict_images")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoReadError(f"cannot open video {str(path)!r}: OpenCV's FFmpeg reader does not recognise it; "
                             + _REENCODE.format(path=path))
    return capture


def _fps(capture: cv2.VideoCapture) -> float:
    """The container's frame rate, or 0 when it does not state a usable one."""
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    return fps if math.isfinite(fps) and 0 < fps <= 1000 else 0.0


def video_info(path: str | Path) -> VideoInfo:
    """Open ``path`` and decode its first frame: the set-up check of a video. Raises :class:`VideoReadError`
    naming the file when it is missing, unreadable or holds no decodable frame."""
    capture = _open(path)
    try:
        ok, frame = capture.read()
        if not ok or frame is None:
            raise VideoReadError(f"video {str(path)!r} opens but no frame decodes (empty, truncated or an unsupported "
                                 "codec); " + _REENCODE.format(path=path))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        return VideoInfo(str(path), _fps(capture), max(count, 0), tuple(frame.shape[:2]))
    finally:
        capture.release()


def read_frames(path: str | Path) -> Iterator[Frame]:
    """The frames of ``path`` in order, one decoded at a time, as RGB :class:`Frame` s.

    The time is the decoder's presentation time (``CAP_PROP_POS_MSEC``); where a container gives none, the frame
    index over the frame rate. A video that stops decoding before the frame count its container states is named
    in a :class:`~mobilenetv2_dense.datasets.checks.DatasetWarning` (the frames before the break are kept).
    """
    capture = _open(path)
    try:
        fps, stated = _fps(capture), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        index, last_time = 0, -1.0
        while True:
            ok, bgr = capture.read()
            if not ok or bgr is None:
                break
            time = float(capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
            if not math.isfinite(time) or time <= last_time:  # no timestamps in this container
                time = index / fps if fps else float(index)
            last_time = time
            yield Frame(str(path), index, time, fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise VideoReadError(f"no frame of video {str(path)!r} decodes; " + _REENCODE.format(path=path))
    if stated > 0 and index < stated:
        warnings.warn(f"video {str(path)!r}: decoded {index} of the {stated} frames its container states (a "
                      "truncated or damaged file?); the frames after the break are not predicted", DatasetWarning,
                      stacklevel=2)


PredictSample = Callable[[np.ndarray, dict[str, Any]], Any]


class VideoFrames(IterableDataset):
    """The frames of ``paths`` (one video after another, each in order) as ``(item, frame)`` pairs for ``predict``.

    ``item = sample(image, meta)`` is the task's predict item built from the ``(H, W, 3)`` uint8 RGB frame and
    ``meta = {"path": str, "image_id": frame index}``, exactly as for an image file; ``frame`` is its
    :class:`Frame`. Batch them with :class:`FrameCollate` over the task's collate.

    Construction is the set-up check (:func:`video_info` of every file): one summary is printed and a missing,
    unreadable or undecodable video is left out, or ``strict=True`` raises
    :class:`~mobilenetv2_dense.datasets.checks.DatasetError`; a single bad video raises :class:`VideoReadError`
    naming it and the fix. Frames are decoded in one process, in order: a loader with more than one worker would
    split the stream, and is refused.
    """

    def __init__(self, paths: Sequence[str | Path], sample: PredictSample, *, name: str = "predict videos",
                 strict: bool = False) -> None:
        report = DatasetReport(name)
        self.videos: list[VideoInfo] = []
        errors = []
        for path in paths:
            try:
                self.videos.append(video_info(path))
            except VideoReadError as error:
                errors.append(error)
                report.add("unreadable video (skipped)", str(path), str(error).split("; ")[0])
        report.counts = {"videos": len(paths), "videos kept": len(self.videos),
                         "frames (as the containers state)": self.frame_count}
        if len(paths) == 1 and errors:
            raise errors[0]
        report.finish(strict, fix="Remove or re-encode the videos named above.")
        if not self.videos:
            raise VideoReadError(f"{name}: none of the {len(paths)} videos decodes (see the summary above)")
        self.sample = sample

    @property
    def frame_count(self) -> int:
        """The frames the containers state, over all videos (an estimate: some containers do not know)."""
        return sum(video.frame_count for video in self.videos)

    def __iter__(self) -> Iterator[tuple[Any, Frame]]:
        worker = get_worker_info()
        if worker is not None and worker.num_workers > 1:
            raise RuntimeError(f"VideoFrames: a video is decoded in order by one process, but the loader has "
                               f"{worker.num_workers} workers; use num_workers 0 or 1")
        for video in self.videos:
            for frame in read_frames(video.path):
                yield self.sample(frame.image, {"path": frame.path, "image_id": frame.index}), frame


class FrameCollate:
    """The collate of :class:`VideoFrames`: ``collate`` (the task's; ``None``: torch's default) over the items, and
    each item's :class:`Frame` put into the batch: under ``"frames"`` in a dict batch, under ``"frame"`` in each
    target dict of an ``(images, targets)`` batch (the detection contract). A class, not a closure, so that loader
    workers can receive it under any start method."""

    def __init__(self, collate: Callable | None) -> None:
        self.collate = collate or default_collate

    def __call__(self, batch: Sequence[tuple[Any, Frame]]) -> Any:
        items, frames = zip(*batch)
        out = self.collate(list(items))
        if isinstance(out, dict):
            return {**out, "frames": list(frames)}
        images, targets = out
        return images, [{**target, "frame": frame} for target, frame in zip(targets, frames)]


def batch_frames(batch: Any) -> list[Frame] | None:
    """The :class:`Frame` of each sample of a predict batch made by :class:`FrameCollate`, or ``None`` for a batch
    of image files."""
    if isinstance(batch, dict):
        return batch.get("frames")
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[1], (tuple, list)):
        targets = batch[1]
        if targets and all(isinstance(t, dict) and "frame" in t for t in targets):
            return [t["frame"] for t in targets]
    return None
