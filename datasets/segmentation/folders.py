"""Any image / mask folder pair on disk: files paired by name, optional split lists, the pairing reported.

Layout (the folders may nest; a file's name is its path under the folder without the suffix, so flat folders pair by
file stem)::

    train_images/<name>.jpg|png|...      train_masks/<name><mask_suffix>.png
    val_images/<name>.jpg|png|...        val_masks/<name><mask_suffix>.png

An image without a mask, a mask without an image, two images (or masks) of one name, a JPEG mask (its lossy
compression changes labels along every edge) and a split-list name with no pair are problems of the set-up summary,
each naming its file; the pairs go on to the pixel check of
:class:`~mobilenetv2_dense.datasets.segmentation.dataset.SegmentationDataset`.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from ..checks import DatasetReport
from .voc import Sample

MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")  # lossless: every pixel keeps its label
_LOSSY = (".jpg", ".jpeg", ".webp")


def index_files(folder: str | Path, suffixes: tuple[str, ...], *, strip: str = "", what: str,
                report: DatasetReport) -> dict[str, Path]:
    """``{name: path}`` of the files under ``folder`` (recursive) whose suffix is in ``suffixes``; ``name`` is the
    path under ``folder`` without the suffix and without ``strip`` at its end. A name found twice is reported
    and left out (which file was meant is unknowable). Raises ``FileNotFoundError`` when ``folder`` is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in suffixes or not path.is_file():
            continue
        name = path.relative_to(folder).with_suffix("").as_posix()
        if strip:
            if not name.endswith(strip):
                continue
            name = name[: -len(strip)]
        found.setdefault(name, []).append(path)
    for paths in found.values():
        if len(paths) > 1:
            report.add(f"{what} sharing one name (skipped)", str(paths[0]),
                       f"also {', '.join(str(p) for p in paths[1:])}: keep one file per name")
    return {name: paths[0] for name, paths in found.items() if len(paths) == 1}


def read_names(path: str | Path) -> list[str]:
    """Names from a split list: one per line, a file name or a path under the images folder (its suffix is
    dropped); blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {str(path)!r} does not exist")
    names = []
    for line in path.read_text().splitlines():
        entry = line.strip()
        if entry:
            names.append(entry[: -len(Path(entry).suffix)] if Path(entry).suffix.lower() in IMG_EXTENSIONS else entry)
    return names


def pair_files(images: dict[str, Path], masks: dict[str, Path], *, report: DatasetReport,
               names: list[str] | None = None) -> list[Sample]:
    """One :class:`~mobilenetv2_dense.datasets.segmentation.voc.Sample` per name with both an image and a mask, in
    name order (``names``: only those, in that order). Unpaired files are reported; so are listed names that have
    no pair."""
    if names is None:
        for name in sorted(masks.keys() - images.keys()):
            report.add("masks without an image (skipped)", str(masks[name]))
        names = sorted(images)
    else:
        for name in names:
            if name not in images and name not in masks:
                report.add("listed names without files (skipped)", name, "no image and no mask of this name")
            elif name not in images:
                report.add("masks without an image (skipped)", str(masks[name]))
    samples = []
    for name in dict.fromkeys(names):  # a name listed twice is one sample
        if name in images and name not in masks:
            report.add("images without a mask (skipped)", str(images[name]))
        elif name in images:
            samples.append(Sample(name, str(images[name]), str(masks[name])))
    report.counts["pairs"] = len(samples)
    return samples


def folder_samples(images_dir: str | Path, masks_dir: str | Path, *, mask_suffix: str = "",
                   split_list: str | Path | None = None, report: DatasetReport) -> list[Sample]:
    """The image / mask pairs of two folders (see the module docstring), problems recorded in ``report``. One folder
    may hold both when the masks' names end with ``mask_suffix`` (``a.jpg`` beside ``a_mask.png``)."""
    same = Path(images_dir).resolve() == Path(masks_dir).resolve()
    if same and not mask_suffix:
        raise ValueError(f"images and masks are both read from {str(images_dir)!r}: give mask_suffix, the end of "
                         "the masks' names (_mask for a.jpg beside a_mask.png), or put the masks in their own folder")
    images = index_files(images_dir, tuple(IMG_EXTENSIONS), what="images", report=report)
    if same:
        images = {name: path for name, path in images.items() if not name.endswith(mask_suffix)}
    masks = index_files(masks_dir, MASK_EXTENSIONS, strip=mask_suffix, what="masks", report=report)
    for path in index_files(masks_dir, _LOSSY, strip=mask_suffix, what="masks", report=report).values():
        report.add("JPEG masks (skipped)", str(path), "lossy compression changes the labels along every edge; save "
                   "masks as PNG")
    names = read_names(split_list) if split_list is not None else None
    return pair_files(images, masks, report=report, names=names)
