"""Lightning tasks: classification, SSDLite detection and DeepLabv3 segmentation, with their data modules.

Sub-packages: ``mobilenetv2_dense.tasks.classification``, ``mobilenetv2_dense.tasks.detection``,
``mobilenetv2_dense.tasks.segmentation``.
"""
