"""Reading images the way real datasets need: EXIF orientation, any colour mode to RGB, truncation checks, and
a file that breaks after the set-up check replaced by the next sample."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from .checks import DatasetWarning

# A JPEG ends with the EOI marker and a PNG with its IEND chunk; checking the tail finds truncated
# files without decoding every image of a 118k-image dataset at set-up.
_TRAILERS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",)}

# torchvision's ImageNet normalisation, which every task and the torchvision weights use.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# How many other samples a dataset tries when images fail to decode, before giving up.
MAX_REPLACEMENTS = 10

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
