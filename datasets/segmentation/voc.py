"""PASCAL VOC 2012 segmentation on disk: the layout, the trainaug list from SBD, masks (read and written), the
set-up check.

Layouts read (as the VOC 2012 devkit, the SBD release of Hariharan et al. (ICCV 2011) and DeepLab's converted
trainaug set ship them):

- VOC: ``VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png, ImageSets/Segmentation/*.txt}``;
  masks are palette PNGs with indices 0..20 and 255 on the void border around objects.
- SBD original release: ``dataset/{cls/*.mat, img/*.jpg, train.txt, val.txt}``, the mask in ``GTcls.Segmentation``.
- SBD converted: ``SegmentationClassAug/*.png`` (grayscale indices) with a ``train_aug.txt`` list whose lines are
  either ``name`` or ``/JPEGImages/name.jpg /SegmentationClassAug/name.png``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageOps

from ..checks import DatasetReport
from ..images import ImageReadError, exif_orientation, image_problem, image_size
from ..voc import VOC_CLASSES

VOC_SEGMENTATION_CLASSES = ("background", *VOC_CLASSES)  # mask index 0..20; 255 is void
IGNORE_INDEX = 255
_LAYOUT = ("VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png, "
           "ImageSets/Segmentation/{train,val,trainval}.txt}")


def voc_palette(n: int = 256) -> np.ndarray:
    """The VOC colour map, ``(n, 3)`` uint8: the bits of the index spread over R, G and B, high bits first
    (the devkit's ``VOClabelcolormap.m``). Index 255 (void) is (224, 224, 192)."""
    index = np.arange(n)
    palette = np.zeros((n, 3), dtype=np.int64)
    for bit in range(8):  # 8 bit planes, vectorised over all indices
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


VOC_PALETTE = voc_palette()
# 24-bit colour code -> index. The map is a bijection on 0..255, so every palette colour names one index.
_CODE_TO_INDEX = {(int(r) << 16) | (int(g) << 8) | int(b): i for i, (r, g, b) in enumerate(VOC_PALETTE)}


# What reads one mask file: path -> ((H, W) uint8 labels, converted from colours).
MaskReader = Callable[[str | Path], tuple[np.ndarray, bool]]


class MaskError(ImageReadError):
    """A label file that cannot be turned into indices; the message names the file and the reason, ``kind`` the
    problem as the set-up summary counts it."""

    def __init__(self, message: str, kind: str = "unreadable masks") -> None:
        super().__init__(message)
        self.kind = kind


def rgb_to_index(rgb: np.ndarray, *, path: str | Path = "<array>") -> np.ndarray:
    """Map an ``(H, W, 3)`` VOC-coloured mask to ``(H, W)`` uint8 indices through the VOC palette.

    Raises :class:`MaskError` naming ``path`` and the colours that are not in the palette.
    """
    rgb = rgb[..., :3].astype(np.int32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # (H, W) 24-bit colour codes
    colours, inverse = np.unique(codes, return_inverse=True)  # a loop over the few colours, never over pixels
    unknown = [c for c in colours.tolist() if c not in _CODE_TO_INDEX]
    if unknown:
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown[:8])
        raise MaskError(f"RGB mask {str(path)!r} has {len(unknown)} colour(s) not in the VOC palette: {shown}"
                        f"{', ...' if len(unknown) > 8 else ''}; save it as a palette/index PNG (values 0..K-1, "
                        "255 void) or use only VOC palette colours", kind="masks with colours outside the VOC palette")
    lookup = np.array([_CODE_TO_INDEX[c] for c in colours.tolist()], dtype=np.uint8)
    return lookup[inverse.reshape(codes.shape)]


def read_mask(path: str | Path) -> tuple[np.ndarray, bool]:
    """Read a label file as ``(H, W)`` uint8 indices; returns ``(mask, converted_from_rgb)``.

    Palette (``P``) and grayscale (``L``) PNGs hold the indices; RGB(A) PNGs are mapped through the VOC palette;
    SBD ``.mat`` files hold them in ``GTcls.Segmentation``. Raises :class:`MaskError` naming the file.

    Masks are read in their displayed orientation, as images are
    (:func:`mobilenetv2_dense.datasets.images.read_rgb`): a mask file with its own EXIF orientation tag (one saved
    with its photo's metadata) is transposed by it, and a mask without one is taken as drawn on the displayed
    image, which is what annotation tools show and save.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".mat":
            record = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)["GTcls"]
            return np.asarray(record.Segmentation, dtype=np.uint8), False
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)  # keeps the mode and palette
            if image.mode in ("P", "L"):
                return np.array(image), False  # a writable copy: torch warns on read-only arrays
            if image.mode in ("RGB", "RGBA"):
                return rgb_to_index(np.asarray(image), path=path), True
            raise MaskError(f"mask {str(path)!r} has PIL mode {image.mode}; expected a palette (P), grayscale (L) "
                            "or VOC-coloured RGB PNG")
    except MaskError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder error means unreadable; re-raised with the file
        raise MaskError(f"cannot read mask {str(path)!r}: {type(error).__name__}: {error}") from error


def save_palette_png(labels: np.ndarray, path: str | Path, palette: np.ndarray | None = None) -> Path:
    """Write ``(H, W)`` uint8 labels as a palette PNG (mode ``P``; ``palette`` ``(256, 3)`` uint8, by default the VOC
    colour map: the format of VOC's ``SegmentationClass`` masks and of its evaluation server); the folder is made if
    missing. Returns ``path``."""
    image = Image.fromarray(labels, mode="P")
    image.putpalette((VOC_PALETTE if palette is None else palette).ravel().tolist())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# ----------------------------------------------------------------------------------------------- layout


def find_voc2012(root: str | Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (``root/VOCdevkit/VOC2012``, ``root/VOC2012`` or ``root`` itself)."""
    root = Path(root)
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir() and (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no PASCAL VOC 2012 under {str(root)!r}: expected {root}/{_LAYOUT} (or root pointing at the VOC2012 folder "
        "itself). Set data.root to the folder that holds VOCdevkit (where VOCtrainval_11-May-2012.tar was extracted).")


def read_list(path: str | Path) -> list[str]:
    """Image names from a split list; lines are ``name`` or ``/JPEGImages/name.jpg /SegmentationClassAug/name.png``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {str(path)!r} does not exist")
    names = []
    for line in path.read_text().split("\n"):
        if line.strip():
            names.append(Path(line.split()[0]).stem)  # the image column; ``stem`` drops folder and extension
    return names


@dataclass
class SBDSource:
    """Where the trainaug masks come from: ``.mat`` files (original SBD) or ``SegmentationClassAug`` PNGs."""

    names: list[str]  # every SBD name on offer (train + val, or the train_aug list)
    mask_dir: Path
    suffix: str  # ".mat" or ".png"
    image_dir: Path | None  # SBD's own image folder, for names missing from VOC's JPEGImages
    description: str


def find_sbd(sbd_root: str | Path | None, voc_dir: Path) -> SBDSource:
    """Locate SBD in ``sbd_root`` (original release or converted PNGs) or, when ``None``, beside VOC."""
    # Without sbd_root: inside VOC2012 (the converted PNGs), or beside VOCdevkit (``benchmark_RELEASE``).
    places = [Path(sbd_root)] if sbd_root is not None else [voc_dir, voc_dir.parent, voc_dir.parent.parent]
    for place in places:
        for dataset in (place / "benchmark_RELEASE" / "dataset", place / "dataset", place):
            if (dataset / "cls").is_dir() and (dataset / "train.txt").is_file():
                names = read_list(dataset / "train.txt") + read_list(dataset / "val.txt")
                return SBDSource(names, dataset / "cls", ".mat", dataset / "img", f"SBD release {dataset}")
        if (place / "SegmentationClassAug").is_dir():
            mask_dir = place / "SegmentationClassAug"
            for candidate in (place / "ImageSets" / "Segmentation" / "train_aug.txt", place / "train_aug.txt",
                              voc_dir / "ImageSets" / "Segmentation" / "train_aug.txt",
                              place / "ImageSets" / "Segmentation" / "aug.txt"):
                if candidate.is_file():
                    return SBDSource(read_list(candidate), mask_dir, ".png", None, f"{mask_dir} listed by {candidate}")
            # No list: the converted folder holds SBD train+val and VOC trainval, so all of it minus val is trainaug.
            names = sorted(p.stem for p in mask_dir.glob("*.png"))
            return SBDSource(names, mask_dir, ".png", None, f"{mask_dir} (no train_aug.txt; every mask listed)")
    where = str(sbd_root) if sbd_root is not None else f"{voc_dir} (sbd_root=None)"
    raise FileNotFoundError(
        f"train_split='trainaug' needs SBD, not found in {where!r}: expected the SBD release "
        "(benchmark_RELEASE/dataset/{cls/*.mat, img/*.jpg, train.txt, val.txt}) or the converted "
        "SegmentationClassAug/*.png with ImageSets/Segmentation/train_aug.txt. Set data.sbd_root, "
        "or use data.train_split='train' (1,464 VOC images).")


@dataclass
class Sample:
    name: str
    image: str
    mask: str


def voc_samples(voc_dir: Path, split: str) -> list[Sample]:
    """The VOC ``split`` (train / val / trainval) as image + ``SegmentationClass`` mask paths."""
    names = read_list(voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt")
    return [Sample(n, str(voc_dir / "JPEGImages" / f"{n}.jpg"), str(voc_dir / "SegmentationClass" / f"{n}.png"))
            for n in names]


def trainaug_samples(voc_dir: Path, sbd: SBDSource) -> list[Sample]:
    """VOC train + SBD (train + val), one sample per name, in first-seen order (val is removed by the caller).

    A name with a VOC ``SegmentationClass`` mask keeps it over SBD's: VOC's masks are the finer, checked ones
    with the void border the val set is scored with (the choice of the common conversions, which copy VOC's
    masks over SBD's).
    """
    samples = {s.name: s for s in voc_samples(voc_dir, "train")}
    voc_masks = voc_dir / "SegmentationClass"
    for name in sbd.names:
        if name in samples:
            continue
        image = voc_dir / "JPEGImages" / f"{name}.jpg"
        if not image.is_file() and sbd.image_dir is not None:
            image = sbd.image_dir / f"{name}.jpg"
        voc_mask = voc_masks / f"{name}.png"
        mask = voc_mask if voc_mask.is_file() else sbd.mask_dir / f"{name}{sbd.suffix}"
        samples[name] = Sample(name, str(image), str(mask))
    return list(samples.values())


def remove_names(samples: list[Sample], names: Iterable[str]) -> tuple[list[Sample], int]:
    """Drop the samples whose name is in ``names`` (the val list); returns ``(kept, number removed)``."""
    names = set(names)
    kept = [s for s in samples if s.name not in names]
    return kept, len(samples) - len(kept)


# ---------------------------------------------------------------------------------------- set-up check


def sample_problem(sample: Sample, num_classes: int,
                   read: MaskReader = read_mask) -> tuple[str, str, str] | str | None:
    """Check one sample: ``None`` when usable, ``"rgb"`` when usable after colour conversion, otherwise a
    problem ``(kind, file, detail)``. Reads the image header only, but decodes the whole mask (with ``read``, VOC's
    :func:`read_mask` or a dataset's :class:`~mobilenetv2_dense.datasets.segmentation.masks.MaskDecoder`) for its
    values."""
    problem = image_problem(sample.image)
    if problem:
        return (f"{problem.split(' ')[0]} images", sample.image, problem)
    mask_path = Path(sample.mask)
    if not mask_path.is_file():
        return ("missing masks", sample.mask, "missing file")
    if mask_path.suffix.lower() == ".png":
        problem = image_problem(mask_path)
        if problem:
            return (f"{problem.split(' ')[0]} masks", sample.mask, problem)
    try:
        mask, converted = read(mask_path)
    except MaskError as error:
        return (error.kind, sample.mask, str(error))
    height, width = image_size(sample.image)
    if mask.shape != (height, width):
        detail = f"mask {mask.shape[0]}x{mask.shape[1]}, image {sample.image} {height}x{width} (H x W)"
        orientation = exif_orientation(sample.image)
        if mask.shape == (width, height) and orientation in (5, 6, 7, 8):
            detail += (f"; the mask fits the image as stored, before its EXIF orientation {orientation}, but images "
                       "are read as displayed: save the mask in the displayed orientation, or give it the image's "
                       "EXIF orientation tag")
        return ("masks of the wrong size", sample.mask, detail)
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))  # vectorised over the pixels
    bad = present[(present >= num_classes) & (present != IGNORE_INDEX)]
    if bad.size:
        return ("masks with labels out of range", sample.mask,
                f"values {bad.tolist()} outside 0..{num_classes - 1} and {IGNORE_INDEX}")
    return "rgb" if converted else None


def check_samples(samples: list[Sample], *, num_classes: int, report: DatasetReport, workers: int = 4,
                  read: MaskReader = read_mask,
                  converted_note: str = "RGB masks converted through the VOC palette") -> list[Sample]:
    """Run :func:`sample_problem` on every sample (threads: PNG and JPEG decoding release the GIL); record the
    problems in ``report`` and return the usable samples. ``converted_note`` counts the RGB masks ``read``
    converted."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda s: sample_problem(s, num_classes, read), samples, chunksize=16))
    kept, converted = [], 0
    for sample, result in zip(samples, results):
        if isinstance(result, tuple):
            kind, where, detail = result
            report.add(f"{kind} (image skipped)", where, detail)
            continue
        converted += result == "rgb"
        kept.append(sample)
    report.counts["images"] = len(samples)
    report.counts["images kept"] = len(kept)
    if converted:
        report.counts[converted_note] = converted
    return kept
