"""PASCAL VOC 2012 images that have both a detection annotation and a segmentation mask, as boxes + masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checks import DatasetReport
from ..detection.dataset import Transform
from ..detection.voc import VOCDetection
from ..segmentation.voc import VOC_SEGMENTATION_CLASSES, Sample, check_samples, read_mask
from .dataset import JointDataset


def paired_names(root: str | Path, split: str) -> tuple[list[str], dict[str, int]]:
    """The images of ``split`` with both ``Annotations/<name>.xml`` and ``SegmentationClass/<name>.png``, and counts.

    The split's names come from ``ImageSets/Segmentation/<split>.txt`` (VOC 2012's segmentation sets: the images
    with masks, scored by the segmentation benchmark), or from ``ImageSets/Main/<split>.txt`` when there is no
    segmentation list; list order, each name once. Raises ``FileNotFoundError`` when neither list exists.
    """
    root = Path(root)
    lists = [root / "ImageSets" / folder / f"{split}.txt" for folder in ("Segmentation", "Main")]
    found = [path for path in lists if path.is_file()]
    if not found:
        raise FileNotFoundError(f"VOC split {split!r}: neither {str(lists[0])!r} nor {str(lists[1])!r} exists; root "
                                "must be a VOCdevkit/VOC2012 folder with Annotations/, SegmentationClass/, JPEGImages/ "
                                "and ImageSets/")
    listed = dict.fromkeys(line.split()[0] for line in found[0].read_text().splitlines() if line.strip())
    # One listing per folder instead of two stat calls per name.
    xml = {p.stem for p in (root / "Annotations").glob("*.xml")}
    png = {p.stem for p in (root / "SegmentationClass").glob("*.png")}
    names = [name for name in listed if name in xml and name in png]
    counts = {"listed": len(listed), "with annotation and mask": len(names),
              "without a mask": sum(name in xml and name not in png for name in listed),
              "without an annotation": sum(name not in xml for name in listed)}
    return names, counts


class VOCJoint(JointDataset, VOCDetection):
    """A VOC 2012 split restricted to the images with both files (:func:`paired_names`): boxes from the XML (labels
    1..20 in VOC order), the mask from the ``SegmentationClass`` PNG (0 background, the same 1..20, 255 void), so
    segmentation label k is detection class k.

    Masks get the segmentation set-up check first (missing or unreadable, wrong size, labels out of range; see
    :func:`mobilenetv2_dense.datasets.segmentation.voc.check_samples`), then the images and boxes
    :class:`~mobilenetv2_dense.datasets.detection.voc.VOCDetection`'s; ``strict=True`` raises on any problem.
    """

    def __init__(self, root: str | Path, *, split: str = "train", transform: Transform | None = None,
                 strict: bool = False) -> None:
        root = Path(root)
        names, counts = paired_names(root, split)
        report = DatasetReport(f"VOC {root.name} {split} masks")
        report.counts.update(counts)
        samples = [Sample(n, str(root / "JPEGImages" / f"{n}.jpg"), str(root / "SegmentationClass" / f"{n}.png"))
                   for n in names]
        kept = check_samples(samples, num_classes=len(VOC_SEGMENTATION_CLASSES), report=report)
        report.finish(strict, fix="Fix or remove the files named above.")
        super().__init__(root, split=split, transform=transform, strict=strict, names=[s.name for s in kept])
        self.mask_files = np.array([str(root / "SegmentationClass" / f"{Path(f).stem}.png") for f in self.index.files])

    def semantic_mask(self, j: int, size: tuple[int, int]) -> np.ndarray:
        mask, _ = read_mask(self.mask_files[j])  # palette, grayscale or VOC-coloured RGB, EXIF applied
        if mask.shape != tuple(size):  # checked at set-up; a file replaced since would end up here
            from ..images import ImageReadError

            raise ImageReadError(f"mask {self.mask_files[j]!r} is {mask.shape[0]}x{mask.shape[1]}, its image "
                                 f"{self.index.files[j]!r} {size[0]}x{size[1]} (H x W)")
        return mask
