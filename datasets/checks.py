"""The set-up check every dataset runs: count what is broken, name the files, warn or stop."""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field

from torch import distributed as dist


class DatasetError(ValueError):
    """A dataset with problems under ``strict=True``; the message lists every problem with its file."""


class DatasetWarning(UserWarning):
    """Problems skipped under ``strict=False``."""


@dataclass
class DatasetReport:
    """Problems found while indexing one split of a dataset.

    ``add(kind, where, detail)`` records one problem, e.g. ``add("truncated image", "val2017/1.jpg")``;
    ``counts`` (items indexed, kept, ...) go into the summary too.
    """

    name: str
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, where: str, detail: str = "") -> None:
        self.problems[kind].append(f"{where} ({detail})" if detail else where)

    def __bool__(self) -> bool:
        return any(self.problems.values())

    def summary(self, max_examples: int = 5) -> str:
        lines = [f"{self.name}: " + ", ".join(f"{v} {k}" for k, v in self.counts.items())]
        for kind, items in sorted(self.problems.items()):
            examples = "; ".join(items[:max_examples]) + ("; ..." if len(items) > max_examples else "")
            lines.append(f"  {len(items):>6} {kind}: {examples}")
        if not self:
            lines.append("  no problems found")
        return "\n".join(lines)

    def finish(self, strict: bool, fix: str = "", max_listed: int = 50) -> None:
        """Print the summary; then raise (``strict``) or warn about the problems, naming the files.

        The warning lists at most ``max_listed`` files per kind (real COCO can have thousands); the strict
        error lists them all, since the user has to fix every one.
        """
        if not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):  # once under DDP
            print(self.summary())
        if not self:
            return
        lines = []
        for kind, items in sorted(self.problems.items()):
            shown = items if strict else items[:max_listed]
            lines += [f"{kind}: {item}" for item in shown]
            if len(items) > len(shown):
                lines.append(f"{kind}: ... and {len(items) - len(shown)} more")
        every = "\n".join(lines)
        if strict:
            raise DatasetError(f"{self.name} has problems (strict=True):\n{every}\n{fix}".rstrip())
        warnings.warn(f"{self.name}: skipped or repaired these problems (strict=False):\n{every}",
                      DatasetWarning, stacklevel=2)
