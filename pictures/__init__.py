"""Pictures and plots, for every task: charts (precision-recall curves, confusion matrices, IoU bars, training
curves), drawings of detections and masks, and the files an evaluation writes.

- :mod:`~mobilenetv2_dense.pictures.charts`: the matplotlib charts, and the folder an evaluation writes into;
- :mod:`~mobilenetv2_dense.pictures.curves`: training curves from a run's logs (the ``TrainingCurves`` callback and
  the ``plot`` command's readers);
- :mod:`~mobilenetv2_dense.pictures.detection`: boxes drawn on images, the detection confusion matrix and what
  ``validate`` / ``test`` write for a detector;
- :mod:`~mobilenetv2_dense.pictures.segmentation`: masks in the VOC palette, overlays, and what ``validate`` /
  ``test`` write for a segmenter.
- :mod:`~mobilenetv2_dense.pictures.video`: the annotated video and per-frame JSON ``predict`` writes for a video.

The tasks' prediction writers (``tasks/*/writer.py``) draw with these.
"""

if __name__ != "mobilenetv2_dense.pictures":  # `import pictures` from a checkout would load a second copy
    raise ImportError(f"import mobilenetv2_dense.pictures, not {__name__}: this folder is the "
                      "mobilenetv2_dense.pictures package (pip install -e . maps it; see pyproject.toml)")
