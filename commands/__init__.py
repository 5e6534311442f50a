"""The command floor: what a user runs, on top of the tasks and the deploy floor.

- :mod:`.cli`: the LightningCLI (``fit``, ``validate``, ``test``, ``predict``; ``train_task.py``);
- :mod:`.export`: a checkpoint to ONNX or ExecuTorch, with :mod:`.parity` (deployed against eager on real data);
- :mod:`.anchors`: a detection config's anchors fitted to its training boxes;
- :mod:`.plot`: the training curves of a run folder;
- :mod:`.convert`: a detection config's data written as YOLO, COCO or VOC files;
- :mod:`.benchmark`: a checkpoint in every deploy format, its metric and latency in one table.
"""

if __name__ != "mobilenetv2_dense.commands":  # `import commands` from a checkout would load a second copy
    raise ImportError(f"import mobilenetv2_dense.commands, not {__name__}: this folder is the "
                      "mobilenetv2_dense.commands package (pip install -e . maps it; see pyproject.toml)")
