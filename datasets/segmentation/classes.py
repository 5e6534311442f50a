"""The classes of a segmentation set you bring: their names, in label order, and optionally their mask colours.

Three ways to give them, the same for the config and for Python:

- a list of names, label 0 first (``classes: [background, road, car]``);
- ``classes.txt``: one name per line, label 0 first; blank lines are skipped;
- a YAML file: a list of names, or a mapping with ``names`` (a list, or ``{label: name}`` with labels 0..K-1, the
  form Ultralytics' dataset files use) and, for colour masks, ``colors`` (``[R, G, B]`` per class, in label order)
  and ``ignore_colors`` (colours of unlabelled pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    """K class names in label order and, for RGB masks, the colour of each class and the void colours."""

    names: tuple[str, ...]
    colours: tuple[Colour, ...] | None = None
    ignore_colours: tuple[Colour, ...] = ()
    source: str = "the config"

    def __post_init__(self) -> None:
        names = [str(n).strip() for n in self.names]
        if len(names) < 2:
            raise ValueError(f"classes from {self.source}: {len(names)} class name(s) {names}; a segmentation set "
                             "needs at least 2 (background included), label 0 first")
        empty = [i for i, n in enumerate(names) if not n]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if empty or repeated:
            raise ValueError(f"classes from {self.source}: " + "; ".join(
                ([f"empty name at label(s) {empty}"] if empty else []) +
                ([f"name(s) {repeated} given twice"] if repeated else [])) + "; give each class one distinct name")
        if self.colours is not None and len(self.colours) != len(names):
            raise ValueError(f"classes from {self.source}: {len(self.colours)} colours for {len(names)} classes; "
                             "give one [R, G, B] per class, in label order")
        if self.ignore_colours and self.colours is None:
            raise ValueError(f"classes from {self.source}: ignore_colors without colors; RGB masks need the colour "
                             "of every class too (colors: one [R, G, B] per class, in label order)")
        object.__setattr__(self, "names", tuple(names))


def _colours(value: object, what: str, source: str) -> tuple[Colour, ...]:
    """``[[R, G, B], ...]`` -> tuple of int triples; raises naming ``source`` and the entry."""
    if value is None:
        return ()
    out = []
    for entry in value if isinstance(value, (list, tuple)) else [value]:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3
                and all(isinstance(v, int) and 0 <= v <= 255 for v in entry)):
            raise ValueError(f"{what} in {source}: {entry!r} is not a colour; write [R, G, B] with integers 0..255")
        out.append(tuple(int(v) for v in entry))
    return tuple(out)


def _names(value: object, source: str) -> list[str]:
    if isinstance(value, dict):  # {label: name}, Ultralytics' form
        labels = sorted(value)
        if labels != list(range(len(labels))):
            raise ValueError(f"names in {source}: labels {labels} are not 0..{len(labels) - 1}; number the "
                             "classes from 0 without gaps")
        return [str(value[k]) for k in labels]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise ValueError(f"names in {source}: expected a list of names or {{label: name}}, got {type(value).__name__}")


def read_class_file(path: str | Path) -> ClassTable:
    """Read ``classes.txt`` (one name per line) or a YAML file (see the module docstring) into a :class:`ClassTable`.
    Raises ``FileNotFoundError`` / ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes file {str(path)!r} does not exist; give data.init_args.classes as a list of "
                                "names, or the path of a classes.txt (one name per line) or YAML file")
    source = repr(str(path))
    if path.suffix.lower() not in (".yaml", ".yml"):
        return ClassTable(tuple(line.strip() for line in path.read_text().splitlines() if line.strip()),
                          source=source)
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"classes file {source} is not valid YAML: {error}") from error
    if isinstance(content, list):
        return ClassTable(tuple(_names(content, source)), source=source)
    if not isinstance(content, dict) or "names" not in content:
        raise ValueError(f"classes file {source}: expected a list of names or a mapping with 'names' (and optionally "
                         "'colors', 'ignore_colors'), got " + (f"keys {sorted(content)}" if isinstance(content, dict)
                                                             else type(content).__name__))
    colours = _colours(content.get("colors"), "colors", source)
    return ClassTable(tuple(_names(content["names"], source)), colours or None,
                      _colours(content.get("ignore_colors"), "ignore_colors", source), source)


def class_table(classes: Sequence[str] | str | Path, *, colours: Sequence[Sequence[int]] | None = None,
                ignore_colours: Sequence[Sequence[int]] | None = None) -> ClassTable:
    """The classes given as a list of names or a file path; ``colours`` / ``ignore_colours``, when given, replace the
    file's."""
    if isinstance(classes, (str, Path)):
        table = read_class_file(classes)
    else:
        table = ClassTable(tuple(str(n) for n in classes))
    given = _colours([list(c) for c in colours], "colors", "the config") if colours is not None else None
    ignore = _colours([list(c) for c in ignore_colours], "ignore_colors", "the config") if ignore_colours else None
    if given is None and ignore is None:
        return table
    return ClassTable(table.names, given if given is not None else table.colours,
                      ignore if ignore is not None else table.ignore_colours, table.source)
