"""Cityscapes (fine annotations) on disk: the layout, the 19 evaluated classes and the labelId -> trainId table.

Layout, as ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip`` extract::

    <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The ``labelIds`` masks hold Cityscapes' 34 label ids (0..33); training and the benchmark use 19 of them, mapped to
train ids 0..18, every other id void. cityscapesScripts' ``createTrainIdLabelImgs.py`` writes that mapping to
``*_gtFine_labelTrainIds.png``, which can be read instead (``labels="labelTrainIds"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..checks import DatasetReport
from .folders import index_files, pair_files
from .masks import MaskDecoder
from .voc import IGNORE_INDEX, Sample

# cityscapesScripts, cityscapesscripts/helpers/labels.py (Cordts et al., CVPR 2016): ``labels``, the ``id`` and
# ``trainId`` columns for ids 0..33. trainId 255 is void (ignored in training and evaluation); license plate
# (id -1) is never written into the id images.
CITYSCAPES_LABEL_TO_TRAIN_ID: dict[int, int] = {
    0: 255,   # unlabeled
    1: 255,   # ego vehicle
    2: 255,   # rectification border
    3: 255,   # out of roi
    4: 255,   # static
    5: 255,   # dynamic
    6: 255,   # ground
    7: 0,     # road
    8: 1,     # sidewalk
    9: 255,   # parking
    10: 255,  # rail track
    11: 2,    # building
    12: 3,    # wall
    13: 4,    # fence
    14: 255,  # guard rail
    15: 255,  # bridge
    16: 255,  # tunnel
    17: 5,    # pole
    18: 255,  # polegroup
    19: 6,    # traffic light
    20: 7,    # traffic sign
    21: 8,    # vegetation
    22: 9,    # terrain
    23: 10,   # sky
    24: 11,   # person
    25: 12,   # rider
    26: 13,   # car
    27: 14,   # truck
    28: 15,   # bus
    29: 255,  # caravan
    30: 255,  # trailer
    31: 16,   # train
    32: 17,   # motorcycle
    33: 18,   # bicycle
}

# The 19 evaluated classes, train ids 0..18 (the same labels.py).
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")

_LAYOUT = "{leftImg8bit,gtFine}/{train,val}/<city>/*.png"


def cityscapes_decoder(labels: Literal["labelIds", "labelTrainIds"] = "labelIds") -> MaskDecoder:
    """How Cityscapes masks become train labels: labelIds through :data:`CITYSCAPES_LABEL_TO_TRAIN_ID`, or
    labelTrainIds as they are (0..18, 255 void)."""
    if labels == "labelIds":
        return MaskDecoder.from_ids(CITYSCAPES_LABEL_TO_TRAIN_ID, "Cityscapes labelIds 0..33")
    if labels == "labelTrainIds":
        return MaskDecoder.indices(len(CITYSCAPES_CLASSES), ignore_index=IGNORE_INDEX)
    raise ValueError(f"labels={labels!r}; use 'labelIds' (the masks as released) or 'labelTrainIds' (written by "
                     "cityscapesScripts' createTrainIdLabelImgs.py)")


def find_cityscapes(root: str | Path) -> Path:
    """The folder under ``root`` holding ``leftImg8bit`` and ``gtFine`` (``root`` or ``root/cityscapes``)."""
    root = Path(root)
    for candidate in (root, root / "cityscapes"):
        if (candidate / "leftImg8bit").is_dir() and (candidate / "gtFine").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no Cityscapes under {str(root)!r}: expected {root}/{_LAYOUT}. Set data.init_args.root to the folder where "
        "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip were extracted.")


def cityscapes_samples(root: str | Path, split: str, *, report: DatasetReport,
                       labels: Literal["labelIds", "labelTrainIds"] = "labelIds") -> list[Sample]:
    """The ``split`` (``train`` / ``val``) as image + ``gtFine`` mask pairs, named ``<city>/<city>_<seq>_<frame>``;
    unpaired files are recorded in ``report``."""
    folder = find_cityscapes(root)
    images = index_files(folder / "leftImg8bit" / split, (".png",), strip="_leftImg8bit", what="images",
                         report=report)
    masks = index_files(folder / "gtFine" / split, (".png",), strip=f"_gtFine_{labels}", what="masks", report=report)
    return pair_files(images, masks, report=report)
