"""Checkpoints and configs from before the ``mobilenetv2_dense`` package: rename their module paths.

Until 0.1.0 the project installed the top-level packages ``backbone``, ``heads`` and ``tasks``. A checkpoint of
that time names them twice: in strings (``hyper_parameters["_class_path"] = "tasks.detection.DetectionTask"``)
and in pickled objects (``tasks.optim.Optimization``), which no longer import. The weights themselves
(``state_dict``) are unchanged. Upgrade a file once:

    python -m mobilenetv2_dense.tasks.upgrade OLD.ckpt [NEW.ckpt]      # default: OLD-upgraded.ckpt

or a config (``class_path: tasks....`` lines) with the same command on a ``.yaml`` file.
:data:`MOVED` and :data:`CLASS_MOVED` list what moved besides the prefix (to ``models/`` and ``datasets/``);
README's rename table shows the class paths.
"""

from __future__ import annotations

import argparse
import pickle
import re
import types
from pathlib import Path
from typing import Any

import torch

PACKAGE = "mobilenetv2_dense"
LEGACY_TOP_LEVEL = ("backbone", "heads", "tasks")

_P = PACKAGE
# Old module (package prefix added) -> its module now, for the modules that moved to models/ and datasets/.
MOVED: dict[str, str] = {
    f"{_P}.tasks.detection.model": f"{_P}.models.ssdlite",
    f"{_P}.tasks.segmentation.model": f"{_P}.models.deeplab",
    f"{_P}.tasks.images": f"{_P}.datasets.images",
    f"{_P}.tasks.checks": f"{_P}.datasets.checks",
    f"{_P}.tasks.seeding": f"{_P}.datasets.seeding",
    f"{_P}.tasks.synthetic": f"{_P}.datasets.synthetic",
    f"{_P}.tasks.detection.coco": f"{_P}.datasets.detection.coco",
    f"{_P}.tasks.detection.voc": f"{_P}.datasets.detection.voc",
    f"{_P}.tasks.detection.data": f"{_P}.datasets.detection.dataset",
    f"{_P}.tasks.detection.transforms": f"{_P}.datasets.detection.transforms",
    f"{_P}.tasks.detection.shapes": f"{_P}.datasets.detection.shapes",
    f"{_P}.tasks.segmentation.voc": f"{_P}.datasets.segmentation.voc",
    f"{_P}.tasks.segmentation.data": f"{_P}.datasets.segmentation.dataset",
    f"{_P}.tasks.segmentation.transforms": f"{_P}.datasets.segmentation.transforms",
    f"{_P}.tasks.segmentation.shapes": f"{_P}.datasets.segmentation.shapes",
    f"{_P}.tasks.classification.data": f"{_P}.datasets.classification.folder",
}
# Classes whose old module was split: the LightningDataModules stayed in tasks/, the rest went to datasets/.
CLASS_MOVED: dict[str, str] = {
    f"{_P}.tasks.segmentation.data.VOCSegmentationDataModule": f"{_P}.tasks.segmentation.VOCSegmentationDataModule",
    f"{_P}.tasks.segmentation.shapes.ShapesVOCDataModule": f"{_P}.tasks.segmentation.ShapesVOCDataModule",
    f"{_P}.tasks.detection.shapes.ShapesCOCODataModule": f"{_P}.tasks.detection.ShapesCOCODataModule",
    f"{_P}.tasks.classification.data.ImageFolderDataModule": f"{_P}.tasks.classification.ImageFolderDataModule",
    f"{_P}.tasks.classification.data.ShapesImageFolderDataModule":
        f"{_P}.tasks.classification.ShapesImageFolderDataModule",
}


def new_module(module: str) -> str:
    """``tasks.optim`` -> ``mobilenetv2_dense.tasks.optim`` (and on through :data:`MOVED`); others unchanged."""
    if module.split(".")[0] in LEGACY_TOP_LEVEL:
        module = f"{PACKAGE}.{module}"
    for old, new in MOVED.items():
        if module == old or module.startswith(old + "."):
            return new + module[len(old):]
    return module


def new_class_path(path: str) -> str:
    """A dotted ``module.Class`` path of the old layout -> today's; anything else is returned as it is."""
    if not isinstance(path, str) or path.split(".")[0] not in (*LEGACY_TOP_LEVEL, PACKAGE) or "." not in path:
        return path
    prefixed = path if path.startswith(PACKAGE + ".") else f"{PACKAGE}.{path}"
    if prefixed in CLASS_MOVED:
        return CLASS_MOVED[prefixed]
    module, _, name = path.rpartition(".")
    return f"{new_module(module)}.{name}"


class _RenamingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module, _, name = new_class_path(f"{module}.{name}").rpartition(".")
        return super().find_class(module, name)


# torch.load wraps ``pickle_module.Unpickler`` in its own subclass, so the renaming applies to every global.
_renaming_pickle = types.SimpleNamespace(Unpickler=_RenamingUnpickler, load=pickle.load, __name__="renaming_pickle")


def _rename_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (new_class_path(v) if k in ("_class_path", "class_path") else _rename_strings(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_rename_strings(v) for v in value)
    return value


def upgrade_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Rewrite the Lightning checkpoint ``src`` with today's module paths into ``dst``; returns ``dst``.

    Loads with full unpickling (``weights_only=False``): use it on checkpoints you made yourself.
    """
    checkpoint = torch.load(src, map_location="cpu", weights_only=False, pickle_module=_renaming_pickle)
    for key in ("hyper_parameters", "datamodule_hyper_parameters"):
        if key in checkpoint:
            checkpoint[key] = _rename_strings(checkpoint[key])
    torch.save(checkpoint, dst)
    return Path(dst)


_CLASS_PATH_LINE = re.compile(r"(class_path:\s*)([\w.]+)")


def upgrade_config(src: str | Path, dst: str | Path) -> Path:
    """Rewrite every ``class_path:`` of the YAML config ``src`` with today's module paths into ``dst``."""
    text = Path(src).read_text()
    Path(dst).write_text(_CLASS_PATH_LINE.sub(lambda m: m.group(1) + new_class_path(m.group(2)), text))
    return Path(dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a checkpoint (.ckpt) or a config (.yaml) of the old layout")
    parser.add_argument("dst", type=Path, nargs="?", help="where to write (default: SRC-upgraded.EXT)")
    args = parser.parse_args(argv)
    dst = args.dst or args.src.with_name(f"{args.src.stem}-upgraded{args.src.suffix}")
    upgrade = upgrade_config if args.src.suffix in (".yaml", ".yml") else upgrade_checkpoint
    print(f"{args.src} -> {upgrade(args.src, dst)}")


if __name__ == "__main__":
    main()
