"""mobilenetv2-dense: MobileNetV2 backbones, SSDLite detection and DeepLabv3 segmentation.

One import package over the repository's folders (``pyproject.toml`` maps them):

- ``mobilenetv2_dense.backbone``: MobileNetV2 feature extractors (``backbone/``);
- ``mobilenetv2_dense.heads``: SSDLite and DeepLabv3 heads, anchors, box coding, matching, losses (``heads/``);
- ``mobilenetv2_dense.models``: SSDLite, DeepLabv3 and the classifier as plain PyTorch, with their builders and
  checkpoint loading, importable without Lightning (``models/``);
- ``mobilenetv2_dense.datasets``: datasets, transforms, set-up checks and generated demo data (``datasets/``);
- ``mobilenetv2_dense.tasks``: Lightning modules, data modules and the CLI (``tasks/``).

The command line is ``mobilenetv2-dense fit --config CONFIG`` (or ``python -m mobilenetv2_dense``, or
``python train_task.py`` from the repository root).
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Run from a checkout that was never pip-installed (``PYTHONPATH=. python train_task.py ...``), the sub-packages
# are this folder's siblings: let the package span the repository root, as pyproject.toml's package-dir does for
# an install. An installed wheel has no such siblings and is left alone.
_ROOT = Path(__file__).resolve().parent.parent
if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "backbone" / "__init__.py").is_file():
    __path__.append(str(_ROOT))  # noqa: F821 (__path__ is defined for packages)

try:
    __version__ = version("mobilenetv2-dense")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
