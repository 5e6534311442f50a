"""Reading images the way real datasets need: EXIF orientation, any colour mode to RGB, truncation checks, and
a file that breaks after the set-up check replaced by the next sample; and what ``predict`` reads: a folder, an image
file, a glob or video files (:func:`predict_dataset`)."""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from .checks import DatasetReport, DatasetWarning
from .video import VIDEO_SUFFIXES, PredictSample, VideoFrames

# A JPEG ends with the EOI marker and a PNG with its IEND chunk; checking the tail finds truncated
# files without decoding every image of a 118k-image dataset at set-up.
_TRAILERS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",)}

# torchvision's ImageNet normalisation, which every task and the torchvision weights use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How many other samples a dataset tries when images fail to decode, before giving up.
MAX_REPLACEMENTS = 10
# The image files predict reads from a folder or a glob (what PIL decodes; torchvision's IMG_EXTENSIONS).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

T = TypeVar("T")


class ImageReadError(RuntimeError):
    """An image file that cannot be used; the message names the file and the reason."""


def image_problem(path: str | Path) -> str | None:
    """A short reason why ``path`` is not a usable image (missing, unreadable, truncated), or ``None``.

    Cheap: reads the header and the last bytes, not the pixels.
    """
    path = Path(path)
    if not path.is_file():
        return "missing file"
    try:
        with Image.open(path) as image:
            fmt = image.format
            image.size  # noqa: B018 - parsing the header is the check
    except Exception as error:  # noqa: BLE001 - any decoder error means unreadable
        return f"unreadable ({type(error).__name__}: {error})"
    trailers = _TRAILERS.get(fmt or "")
    if trailers:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 64))
            tail = handle.read().rstrip(b"\x00\r\n ")
        if not any(tail.endswith(t) for t in trailers):
            return "truncated"
    return None


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation tag (1 = stored as displayed; 5..8 swap height and width), from the header only."""
    with Image.open(path) as image:
        return int(image.getexif().get(0x0112, 1))


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` after EXIF orientation, from the header only."""
    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode ``path`` to an ``(H, W, 3)`` uint8 RGB array, EXIF orientation applied.

    Grayscale, palette, RGBA (composited on black) and CMYK images all become RGB.
    Raises :class:`ImageReadError` naming the file.
    """
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (0, 0, 0, 255))
                image = Image.alpha_composite(background, image)
            return np.asarray(image.convert("RGB"))
    except Exception as error:  # noqa: BLE001 - re-raised with the file name
        raise ImageReadError(f"cannot decode image {str(path)!r}: {type(error).__name__}: {error}") from error


def read_index_png(path: str | Path) -> np.ndarray:
    """Read a palette or grayscale label PNG as ``(H, W)`` uint8 indices (no palette lookup), in its displayed
    orientation: a label file's own EXIF orientation is applied, as :func:`read_rgb` applies an image's."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ImageReadError(f"label image {str(path)!r} has mode {image.mode}, expected P or L")
            return np.array(ImageOps.exif_transpose(image))
    except ImageReadError:
        raise
    except Exception as error:  # noqa: BLE001
        raise ImageReadError(f"cannot decode label image {str(path)!r}: {type(error).__name__}: {error}") from error


def load_or_replace(load: Callable[[int], T], index: int, length: int) -> T:
    """``load(index)``, or when that raises :class:`ImageReadError` (a file that broke after the set-up check),
    ``load`` of the next sample, wrapping around, up to :data:`MAX_REPLACEMENTS` others; each failure is a
    :class:`~mobilenetv2_dense.datasets.checks.DatasetWarning` naming the file, so one bad file cannot stop a
    long run. Raises :class:`ImageReadError` when every try fails (a broken disk more likely than broken files).

    The one ``__getitem__`` of the detection, segmentation and classification datasets:
    ``return load_or_replace(self.load, index, len(self))``.
    """
    tries = min(MAX_REPLACEMENTS + 1, length)
    for attempt in range(tries):
        j = (index + attempt) % length
        try:
            return load(j)
        except ImageReadError as error:
            warnings.warn(f"{error}; using sample {(j + 1) % length} instead", DatasetWarning, stacklevel=3)
    raise ImageReadError(f"{tries} samples in a row from sample {index} failed to decode (the warnings name the "
                         "files); check the files (or the disk) and re-run the set-up check")


# ------------------------------------------------------------------------------------------------ predict inputs
_KINDS = (f"a folder of images, an image file ({', '.join(IMAGE_SUFFIXES)}), a glob such as 'photos/*.jpg' "
          f"('**' for subfolders) or a video file ({', '.join(VIDEO_SUFFIXES)})")


def predict_files(source: str | Path) -> tuple[str, list[str]]:
    """What ``predict_images`` names, as ``(kind, files)``: ``kind`` is ``"images"`` or ``"videos"``, ``files``
    sorted.

    ``source`` is a folder (the images directly in it; its videos when it holds no image), one image or video file,
    or a glob (``photos/*.jpg``, ``clips/*.mp4``, ``photos/**/*.png``), ``~`` expanded. Raises
    ``FileNotFoundError`` or ``ValueError`` naming ``source`` and what to pass instead when nothing usable is there:
    a path that does not exist, a glob that matches nothing, a file of another kind, images and videos mixed.
    """
    text = os.path.expanduser(str(source))
    if any(char in text for char in "*?["):
        matches = sorted(path for path in glob.glob(text, recursive=True) if os.path.isfile(path))
        if not matches:
            raise FileNotFoundError(f"predict_images: nothing matches the glob {text!r} (relative paths start in "
                                    f"{os.getcwd()!r}); check the pattern and quote it so the shell passes it whole")
        where = f"the glob {text!r}"
    else:
        path = Path(text)
        if path.is_dir():
            matches = sorted(str(p) for p in path.iterdir() if p.is_file())
            images = [p for p in matches if Path(p).suffix.lower() in IMAGE_SUFFIXES]
            if images:  # videos beside photos are left to an explicit file or glob
                return "images", images
            where = f"folder {text!r}"
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                raise ValueError(f"predict_images: {text!r} is neither an image nor a video file (suffix "
                                 f"{suffix or 'none'!r}); pass {_KINDS}, or convert the file to one of those formats")
            return ("videos" if suffix in VIDEO_SUFFIXES else "images"), [text]
        else:
            raise FileNotFoundError(f"predict_images: {text!r} not found; pass {_KINDS}")
    images = [p for p in matches if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in matches if Path(p).suffix.lower() in VIDEO_SUFFIXES]
    if images and videos:
        raise ValueError(f"predict_images: {where} holds {len(images)} images and {len(videos)} videos; predict "
                         "them in two runs, with a glob for each kind ('dir/*.jpg', 'dir/*.mp4')")
    if not (images or videos):
        found = f"{len(matches)} files, e.g. {Path(matches[0]).name!r}" if matches else "no files"
        raise ValueError(f"predict_images: {where} holds {found}, but no image ({', '.join(IMAGE_SUFFIXES)}) or "
                         f"video ({', '.join(VIDEO_SUFFIXES)}); for images in subfolders pass a glob such as "
                         "'folder/**/*.jpg'")
    return ("images", images) if images else ("videos", videos)


class PredictImages(Dataset):
    """Image files as ``predict`` items: item ``i`` is ``sample(image, {"path": files[i], "image_id": i})``, with
    ``image`` the ``(H, W, 3)`` uint8 RGB decode of the file (:func:`read_rgb`) and ``sample`` the task's item
    builder (its transform and batch contract).

    Construction is the set-up check (:func:`image_problem`: missing, unreadable, truncated); one summary is
    printed, and the files named there are left out, or ``strict=True`` raises
    :class:`~mobilenetv2_dense.datasets.checks.DatasetError`. A file that breaks after the check raises
    :class:`ImageReadError` naming it: a prediction is not replaced by another image's.
    """

    def __init__(self, files: Sequence[str | Path], sample: PredictSample, *, name: str = "predict images",
                 strict: bool = False) -> None:
        files = [str(f) for f in files]
        with ThreadPoolExecutor(max_workers=min(32, 4 * (os.cpu_count() or 1))) as pool:  # overlap the file reads
            problems = list(pool.map(image_problem, files, chunksize=64))
        report = DatasetReport(name)
        for file, problem in zip(files, problems):
            if problem:
                report.add(f"{problem.split(' (')[0]} (image skipped)", file, problem)
        self.files = [file for file, problem in zip(files, problems) if not problem]
        report.counts = {"images": len(files), "images kept": len(self.files)}
        report.finish(strict, fix="Remove or replace the files named above.")
        if not self.files:
            raise ValueError(f"{name}: none of the {len(files)} images is usable (see the summary above)")
        self.sample = sample

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        return self.sample(read_rgb(self.files[index]), {"path": self.files[index], "image_id": index})


def predict_dataset(source: str | Path, sample: PredictSample, *, strict: bool = False) -> Dataset:
    """The ``predict`` dataset of ``source`` (see :func:`predict_files`): :class:`PredictImages` over image files,
    :class:`~mobilenetv2_dense.datasets.video.VideoFrames` (frames streamed in order) over video files. ``sample``
    builds the task's item from an ``(H, W, 3)`` uint8 RGB image and ``{"path", "image_id"}``."""
    kind, files = predict_files(source)
    if kind == "videos":
        return VideoFrames(files, sample, name=f"predict_images {str(source)!r}", strict=strict)
    return PredictImages(files, sample, name=f"predict_images {str(source)!r}", strict=strict)
