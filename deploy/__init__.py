"""Leaving eager PyTorch: deployed graphs, ONNX and ExecuTorch export, their runtimes, Conv+BN folding, parity.

- :mod:`~mobilenetv2_dense.deploy.graph`: the exported computation (normalisation and post-processing inside);
- :mod:`~mobilenetv2_dense.deploy.fuse`: Conv+BN folding and compiled inference;
- :mod:`~mobilenetv2_dense.deploy.formats`: ``torch.export`` -> ``.onnx`` / ``.pte``;
- :mod:`~mobilenetv2_dense.deploy.runtime`: :class:`DeployedModel`, ONNX Runtime or ExecuTorch behind one call;
- :mod:`~mobilenetv2_dense.deploy.parity` and :mod:`~mobilenetv2_dense.deploy.export`: the export command and its
  checks against the eager model (these two use the tasks; the rest needs only the model floor).
"""
