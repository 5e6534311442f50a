"""PASCAL VOC's 20 object classes, in the devkit's order, shared by its detection and segmentation layouts.

Detection labels them 1..20 (0 is background); segmentation masks index
:data:`mobilenetv2_dense.datasets.segmentation.voc.VOC_SEGMENTATION_CLASSES`, which puts ``"background"`` first.
"""

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
