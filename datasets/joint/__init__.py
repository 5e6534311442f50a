"""Joint detection + segmentation data: one image, its boxes and its semantic mask, augmented together.

- ``masks``: semantic masks from COCO instance outlines (polygons, RLE; crowds void) with pycocotools;
- ``coco``: :class:`COCOJoint`, COCO-format data (COCO 2017, or the generated shapes) with masks;
- ``voc``: :class:`VOCJoint`, the PASCAL VOC 2012 images that have both an annotation and a mask;
- ``transforms``: SSD's augmentation on image, boxes and mask alike; evaluation keeps the mask's size;
- ``dataset``: the item contract (the detection target plus ``mask``).
"""

from .coco import COCOJoint
from .dataset import JointDataset
from .masks import outline_problem, outline_rle, semantic_mask
from .transforms import JointTransform, joint_eval_transform, joint_train_transform
from .voc import VOCJoint, paired_names

__all__ = [
    "COCOJoint",
    "JointDataset",
    "JointTransform",
    "VOCJoint",
    "joint_eval_transform",
    "joint_train_transform",
    "outline_problem",
    "outline_rle",
    "paired_names",
    "semantic_mask",
]
