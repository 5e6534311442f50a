"""MkDocs hook: the package laid out as Python sees it, for mkdocstrings.

``pyproject.toml`` maps ``mobilenetv2_dense.backbone`` onto ``backbone/`` and so on; an import finds them through
the editable install, but mkdocstrings (griffe) reads source from folders named as the package. Before a build
this writes ``.cache/docs_package/mobilenetv2_dense/``: the package's own files and one symlink per mapped folder,
which ``mkdocs.yml`` gives mkdocstrings as its path.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_TREE = ROOT / ".cache" / "docs_package"


def on_startup(command: str, dirty: bool) -> None:
    # At start-up, before any plugin's on_config: mkdocstrings drops search paths that do not exist yet.
    write_package_tree()


def write_package_tree() -> None:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    package = PACKAGE_TREE / "mobilenetv2_dense"
    package.mkdir(parents=True, exist_ok=True)
    for name, folder in mapping.items():
        if name == "mobilenetv2_dense":  # the package's own files, copied: griffe follows a file's symlink home
            for source in (ROOT / folder).glob("*.py"):
                copy = package / source.name
                if copy.is_symlink():
                    copy.unlink()
                copy.write_text(source.read_text())
        else:
            _link(package / name.split(".")[-1], ROOT / folder)


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)
