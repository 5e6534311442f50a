"""ADE20K SceneParsing (the MIT Scene Parsing Benchmark, 150 classes) on disk: the layout, the names, the labels.

Layout, as ``ADEChallengeData2016.zip`` extracts::

    <root>/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_<8 digits>.jpg
    <root>/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_<8 digits>.png

Annotations are grayscale PNGs: 0 is "other" (not one of the 150 classes, not scored by the benchmark), 1..150 the
classes in ``objectInfo150`` order. Training reads 0 as void and 1..150 as labels 0..149 (mmsegmentation's
``reduce_zero_label``).
"""

from __future__ import annotations

from pathlib import Path

from ..checks import DatasetReport
from .folders import index_files, pair_files
from .masks import MaskDecoder
from .voc import Sample

# objectInfo150.csv of the benchmark's development kit (CSAILVision/sceneparsing), in its order (annotation value
# 1..150 -> label 0..149): the first name of each row, as mmsegmentation and detectron2 name the classes.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock",
    "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers",
    "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway",
    "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land",
    "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall",
    "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag",
)
ADE20K_SPLITS = {"train": "training", "val": "validation"}
_LAYOUT = "ADEChallengeData2016/{images/{training,validation}/*.jpg, annotations/{training,validation}/*.png}"


def ade20k_decoder() -> MaskDecoder:
    """Annotation 0 ("other") -> void, 1..150 -> labels 0..149; any other value is reported."""
    return MaskDecoder.indices(len(ADE20K_CLASSES), reduce_zero_label=True)


def find_ade20k(root: str | Path) -> Path:
    """The ``ADEChallengeData2016`` folder under ``root`` (``root/ADEChallengeData2016`` or ``root`` itself)."""
    root = Path(root)
    for candidate in (root / "ADEChallengeData2016", root):
        if (candidate / "images").is_dir() and (candidate / "annotations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no ADE20K SceneParsing under {str(root)!r}: expected {root}/{_LAYOUT} (or root pointing at the "
        "ADEChallengeData2016 folder itself). Set data.init_args.root to where ADEChallengeData2016.zip was extracted.")


def ade20k_samples(root: str | Path, split: str, *, report: DatasetReport) -> list[Sample]:
    """The ``split`` (``train`` / ``val``) as image + annotation pairs; unpaired files are recorded in ``report``."""
    folder, split_dir = find_ade20k(root), ADE20K_SPLITS[split]
    images = index_files(folder / "images" / split_dir, (".jpg", ".jpeg", ".png"), what="images", report=report)
    masks = index_files(folder / "annotations" / split_dir, (".png",), what="masks", report=report)
    return pair_files(images, masks, report=report)
