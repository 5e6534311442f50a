"""Data: datasets, transforms, set-up checks and generated demo sets; no Lightning module is imported here.

- ``images``: reading images as real datasets need (EXIF, colour modes, truncation), replacing unreadable samples;
  what ``predict`` reads (a folder, an image file, a glob, videos);
- ``video``: video files decoded frame by frame (OpenCV) as ``predict`` samples, with each frame's index and time;
- ``checks``: the set-up report every dataset prints (and raises under ``strict``);
- ``seeding``: loaders whose augmentation ``seed_everything`` reaches, different in every worker and epoch;
- ``synthetic``: generated scenes of coloured shapes, written by the ``shapes`` modules in real dataset layouts;
- ``voc``: PASCAL VOC's 20 object classes, shared by its detection and segmentation layouts;
- ``detection``, ``segmentation``, ``classification``: each task's datasets, batch contract (collate) and
  transforms.

The Lightning data modules that read these live beside the tasks (``mobilenetv2_dense.tasks.*.datamodule``).
"""

if __name__ != "mobilenetv2_dense.datasets":  # `import datasets` from a checkout would load a second copy
    raise ImportError(f"import mobilenetv2_dense.datasets, not {__name__}: this folder is the "
                      "mobilenetv2_dense.datasets package (pip install -e . maps it; see pyproject.toml)")
