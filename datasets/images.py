"""Reading images the way real datasets need: EXIF orientation, any colour mode to RGB (16-bit samples scaled, the
first frame of an animation), truncation checks, and a file that breaks after the set-up check replaced by the next
sample; and what ``predict`` reads: a folder, an image file, a glob or video files (:func:`predict_dataset`), each
image at its working size (at most ``max_pixels``), every file it cannot read named in one line."""

from __future__ import annotations

import glob
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageOps
from torch import distributed as dist
from torch.utils.data import Dataset

from .checks import DatasetError, DatasetWarning
from .video import VIDEO_SUFFIXES, PredictSample, VideoFrames

# A JPEG ends with the EOI marker and a PNG with its IEND chunk; checking the tail finds truncated
# files without decoding every image of a 118k-image dataset at set-up.
_TRAILERS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",)}

# torchvision's ImageNet normalisation, which every task and the torchvision weights use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How many other samples a dataset tries when images fail to decode, before giving up.
MAX_REPLACEMENTS = 10
# The image files predict reads from a folder or a glob (what PIL decodes; torchvision's IMG_EXTENSIONS and GIF).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif")
# The most pixels predict gives the network of one image (4096 x 4096): a larger image is read scaled down to this,
# keeping its aspect, so memory stays bounded (a segmenter runs at the image's own size, and a 108-Mpx overlay
# alone takes gigabytes); the writers map its boxes and masks back to the full image.
PREDICT_MAX_PIXELS = 4096 * 4096
# Modes of 16-bit samples (PNG, TIFF), whose 0..65535 range becomes 0..255 (PIL's own conversion clips at 255).
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")

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
    if path.stat().st_size == 0:
        return "empty file (zero bytes)"
    try:
        with Image.open(path) as image:
            fmt = image.format
            image.size  # noqa: B018 - parsing the header is the check
    except Image.DecompressionBombError as error:
        return (f"oversized image ({error}); PIL refuses more than {2 * Image.MAX_IMAGE_PIXELS} pixels: scale it "
                "down, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file")
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


def working_size(size: tuple[int, int], max_pixels: int | None) -> tuple[int, int]:
    """``size`` ``(H, W)`` scaled down, aspect kept, to at most ``max_pixels`` pixels (each side at least 1);
    ``size`` itself when it fits or ``max_pixels`` is ``None``."""
    height, width = size
    if max_pixels is None or height * width <= max_pixels:
        return size
    scale = math.sqrt(max_pixels / (height * width))
    return max(1, int(height * scale)), max(1, int(width * scale))


@contextmanager
def large_images_allowed() -> Iterator[None]:
    """Silence PIL's ``DecompressionBombWarning`` (an image over ``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 Mpx) while
    predict reads images at their working size; PIL's error at twice that still refuses a file. Enter it in the
    thread that starts any reader threads: warning filters are process-wide."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB: 16-bit samples scaled (65535 -> 255), transparency composited on black, CMYK, palette,
    grayscale converted."""
    if image.mode in _SIXTEEN_BIT:
        samples = np.asarray(image).astype(np.float32)  # (H, W) in 0..65535
        image = Image.fromarray(np.clip(samples / 257 + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def read_rgb(path: str | Path, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode ``path`` to an ``(H, W, 3)`` uint8 RGB array, EXIF orientation applied.

    Grayscale, palette, RGBA (composited on black), CMYK and 16-bit images all become RGB (16-bit samples scaled to
    8 bits, not clipped); an animation gives its first frame. ``size``: the ``(H, W)`` wanted (displayed
    orientation), e.g. :func:`working_size` of :func:`image_size`: a JPEG is decoded at the reduced scale nearest
    above it (1/2, 1/4, 1/8: the time and memory of the small image), then resized (aspect as given).
    Raises :class:`ImageReadError` naming the file.
    """
    try:
        with Image.open(path) as image:
            if size is not None:
                swapped = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                image.draft(image.mode, (size[0], size[1]) if swapped else (size[1], size[0]))  # stored (W, H)
            image = _to_rgb(ImageOps.exif_transpose(image))
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image)
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


def _left_out(file: str) -> tuple[str, str]:
    """``(file, reason)`` for a file of a folder or glob that predict does not read as an image."""
    video = Path(file).suffix.lower() in VIDEO_SUFFIXES
    return file, ("a video: predict videos in a run of their own" if video else "not an image")


def predict_listing(source: str | Path) -> tuple[str, list[str], list[tuple[str, str]]]:
    """:func:`predict_files` plus the files ``source`` names that predict leaves out, as ``(file, reason)``: in a
    folder or a glob of images, the files that are not images (``notes.txt``: ``"not an image"``) and videos; in
    one of videos, the files that are not videos. Hidden files (``.DS_Store``) are not named."""
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
            matches = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            images = [p for p in matches if Path(p).suffix.lower() in IMAGE_SUFFIXES]
            if images:  # videos beside photos are left to an explicit file or glob
                chosen = set(images)
                return "images", images, [_left_out(p) for p in matches if p not in chosen]
            where = f"folder {text!r}"
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                raise ValueError(f"predict_images: {text!r} is neither an image nor a video file (suffix "
                                 f"{suffix or 'none'!r}); pass {_KINDS}, or convert the file to one of those formats")
            return ("videos" if suffix in VIDEO_SUFFIXES else "images"), [text], []
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
    kind, files = ("images", images) if images else ("videos", videos)
    chosen = set(files)
    others = [p for p in matches if p not in chosen and not Path(p).name.startswith(".")]
    return kind, files, [(p, "not a video") if kind == "videos" else _left_out(p) for p in others]


def predict_files(source: str | Path) -> tuple[str, list[str]]:
    """What ``predict_images`` names, as ``(kind, files)``: ``kind`` is ``"images"`` or ``"videos"``, ``files``
    sorted.

    ``source`` is a folder (the images directly in it; its videos when it holds no image), one image or video file,
    or a glob (``photos/*.jpg``, ``clips/*.mp4``, ``photos/**/*.png``), ``~`` expanded. Raises
    ``FileNotFoundError`` or ``ValueError`` naming ``source`` and what to pass instead when nothing usable is there:
    a path that does not exist, a glob that matches nothing, a file of another kind, images and videos mixed.
    """
    kind, files, _ = predict_listing(source)
    return kind, files


def displayed_size(path: str | Path) -> tuple[int, int]:
    """:func:`image_size` (``(H, W)`` after EXIF orientation, from the header) of an image predict reads, however
    large: what the prediction writers map boxes and masks to."""
    with large_images_allowed():
        return image_size(path)


def _common_folder(files: Sequence[str]) -> str:
    """The deepest folder holding every file of ``files`` (the folder of a folder source; a glob's base)."""
    return os.path.commonpath([os.path.dirname(os.path.abspath(file)) for file in files])


def _first_process() -> bool:
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def skipped_line(where: str, total: int, skipped: Sequence[tuple[str, str]], *, max_named: int = 20) -> str:
    """The one line that names what predict skipped: ``"predict: 2 of 9 files in 'photos' could not be read and
    were skipped: notes.txt (not an image), empty.jpg (empty file)"``; each reason is the text before its details,
    each file relative to ``where``."""
    names = [f"{os.path.relpath(file, where)} ({reason.split(' (')[0]})" for file, reason in skipped]
    more = f", and {len(names) - max_named} more" if len(names) > max_named else ""
    return (f"predict: {len(skipped)} of {total} files in {where!r} could not be read and were skipped: "
            + ", ".join(names[:max_named]) + more)


class PredictImages(Dataset):
    """Image files as ``predict`` items: item ``i`` is ``sample(image, {"path": files[i], "image_id": i})``, with
    ``image`` the ``(H, W, 3)`` uint8 RGB decode of the file (:func:`read_rgb`) at its working size and ``sample``
    the task's item builder (its transform and batch contract).

    The working size is the displayed size (EXIF orientation applied), scaled down to at most ``max_pixels``
    (:func:`working_size`; ``None``: never): predictions of a larger image are in the pixels of that smaller copy,
    which the prediction writers map back to the full image. PIL's warning for images over 89.5 Mpx is silenced
    here (they are read reduced); its error at twice that still skips a file.

    Construction is the set-up check (:func:`image_problem`: missing, empty, unreadable, truncated, oversized). The
    files it fails and ``left_out`` (the ``(file, reason)`` of :func:`predict_listing`) are named in one line
    (:func:`skipped_line`), printed and warned as a
    :class:`~mobilenetv2_dense.datasets.checks.DatasetWarning`, and skipped; ``strict=True`` raises
    :class:`~mobilenetv2_dense.datasets.checks.DatasetError` for the failed images instead. A file that breaks after
    the check raises :class:`ImageReadError` naming it: a prediction is not replaced by another image's.
    """

    def __init__(self, files: Sequence[str | Path], sample: PredictSample, *, name: str = "predict images",
                 strict: bool = False, left_out: Sequence[tuple[str, str]] = (),
                 max_pixels: int | None = PREDICT_MAX_PIXELS) -> None:
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"{name}: max_pixels must be a positive number of pixels or None, got {max_pixels}")
        files = [str(f) for f in files]
        with large_images_allowed(), ThreadPoolExecutor(max_workers=min(32, 4 * (os.cpu_count() or 1))) as pool:
            problems = list(pool.map(image_problem, files, chunksize=64))  # overlap the file reads
        failed = [(file, problem) for file, problem in zip(files, problems) if problem]
        if strict and failed:
            every = "\n".join(f"{file}: {problem}" for file, problem in failed)
            raise DatasetError(f"{name} has problems (strict=True):\n{every}\nRemove or replace the files named above.")
        self.files = [file for file, problem in zip(files, problems) if not problem]
        self.sample, self.max_pixels = sample, max_pixels
        skipped = sorted([(str(file), reason) for file, reason in left_out] + failed)
        where = _common_folder(files + [file for file, _ in skipped])
        total = len(files) + len(left_out)
        if skipped:
            line = skipped_line(where, total, skipped)
            if _first_process():  # once under DDP
                print(line)
            details = [f"  {file}: {problem}" for file, problem in failed[:50] if " (" in problem]
            warnings.warn("\n".join([line, *details]), DatasetWarning, stacklevel=2)
        elif _first_process():
            print(f"predict: {total} images in {where!r}")
        if not self.files:
            raise ValueError(f"{name}: none of the {total} files is a readable image (see the line above)")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        path = self.files[index]
        with large_images_allowed():
            try:
                size = working_size(image_size(path), self.max_pixels)
            except Exception as error:  # noqa: BLE001 - a file changed since the set-up check
                raise ImageReadError(f"cannot read image {path!r}: {type(error).__name__}: {error}") from error
            image = read_rgb(path, size=size)
        return self.sample(image, {"path": path, "image_id": index})


def predict_dataset(source: str | Path, sample: PredictSample, *, strict: bool = False,
                    max_pixels: int | None = PREDICT_MAX_PIXELS) -> Dataset:
    """The ``predict`` dataset of ``source`` (see :func:`predict_files`): :class:`PredictImages` over image files
    (each at most ``max_pixels``), :class:`~mobilenetv2_dense.datasets.video.VideoFrames` (frames streamed in order)
    over video files. ``sample`` builds the task's item from an ``(H, W, 3)`` uint8 RGB image and
    ``{"path", "image_id"}``."""
    kind, files, left_out = predict_listing(source)
    name = f"predict_images {str(source)!r}"
    if kind == "images":
        return PredictImages(files, sample, name=name, strict=strict, left_out=left_out, max_pixels=max_pixels)
    if left_out:  # the files of a glob of videos that are not videos
        line = skipped_line(_common_folder([*files, *(f for f, _ in left_out)]), len(files) + len(left_out), left_out)
        if _first_process():
            print(line)
        warnings.warn(line, DatasetWarning, stacklevel=2)
    return VideoFrames(files, sample, name=name, strict=strict)
