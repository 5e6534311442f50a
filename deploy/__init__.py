"""Leaving eager PyTorch: deployed graphs, ONNX and ExecuTorch export, their runtimes, Conv+BN folding, int8.

- :mod:`~mobilenetv2_dense.deploy.graph`: the exported computation (normalisation and post-processing inside);
- :mod:`~mobilenetv2_dense.deploy.fuse`: Conv+BN folding and compiled inference;
- :mod:`~mobilenetv2_dense.deploy.formats`: ``torch.export`` -> ``.onnx`` / ``.pte``;
- :mod:`~mobilenetv2_dense.deploy.runtime`: :class:`DeployedModel`, ONNX Runtime or ExecuTorch behind one call;
- :mod:`~mobilenetv2_dense.deploy.backend`: one interface over the PyTorch network (eager, fused, compiled) and an
  exported file, taking normalised batches and giving post-processed outputs (what the tasks evaluate and predict
  with);
- :mod:`~mobilenetv2_dense.deploy.quantize`: int8 weights and activations (ONNX Runtime, PT2E).

Needs only the model floor; the export command and its parity checks, which read checkpoints and data through the
tasks, are :mod:`mobilenetv2_dense.commands.export` and :mod:`mobilenetv2_dense.commands.parity`.
"""

if __name__ != "mobilenetv2_dense.deploy":  # `import deploy` from a checkout would load a second copy
    raise ImportError(f"import mobilenetv2_dense.deploy, not {__name__}: this folder is the "
                      "mobilenetv2_dense.deploy package (pip install -e . maps it; see pyproject.toml)")
