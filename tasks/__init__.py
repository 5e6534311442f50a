"""Lightning tasks: classification, SSDLite detection and DeepLabv3 segmentation, with their data modules.

Sub-packages: ``tasks.classification``, ``tasks.detection``, ``tasks.segmentation``.
"""
