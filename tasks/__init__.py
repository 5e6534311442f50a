"""Lightning tasks: classification, SSDLite detection and DeepLabv3 segmentation, with their data modules.

Sub-packages: ``mobilenetv2_dense.tasks.classification``, ``mobilenetv2_dense.tasks.detection``,
``mobilenetv2_dense.tasks.segmentation``.
"""

if __name__ != "mobilenetv2_dense.tasks":  # `import tasks` from a checkout would load a second copy
    raise ImportError(f"import mobilenetv2_dense.tasks, not {__name__}: this folder is the "
                      "mobilenetv2_dense.tasks package (pip install -e . maps it; see pyproject.toml)")
