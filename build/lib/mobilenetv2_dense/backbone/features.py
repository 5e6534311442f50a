"""Feature metadata: the timm-compatible description of what a backbone can hand to a head."""

from __future__ import annotations

from collections.abc import Iterable


class FeatureInfo(list):
    """A list of feature dicts, one per tappable tensor, in network order (so ordered by stride).

    Each entry carries timm's keys, so timm-style code works unchanged::

        {"name": "stage6_expansion", "num_chs": 576, "reduction": 16,
         "module": "stages.5.0.expand", "stage": 6, "location": "expansion"}

    ``location`` is ``"bottleneck"`` for a stage output and ``"expansion"`` for the output of the 1x1
    expansion conv of a stage's first block (taken before its depthwise conv, as SSDLite needs).
    """

    def __init__(self, entries: Iterable[dict]) -> None:
        super().__init__(dict(e) for e in entries)
        self._by_name = {e["name"]: e for e in self}

    @property
    def names(self) -> list[str]:
        return [e["name"] for e in self]

    def get(self, name: str) -> dict:
        """The entry called ``name``; a ``KeyError`` lists the names there are."""
        if name not in self._by_name:
            raise KeyError(f"unknown feature {name!r}; available features: {', '.join(self.names)}")
        return self._by_name[name]

    def select(self, names: Iterable[str]) -> FeatureInfo:
        """The entries for ``names``, kept in network order."""
        wanted = set(names)
        for name in wanted:
            self.get(name)
        return FeatureInfo(e for e in self if e["name"] in wanted)

    def _column(self, key: str, names: Iterable[str] | None) -> list:
        entries = self if names is None else [self.get(n) for n in names]
        return [e[key] for e in entries]

    def channels(self, names: Iterable[str] | None = None) -> list[int]:
        return self._column("num_chs", names)

    def reduction(self, names: Iterable[str] | None = None) -> list[int]:
        return self._column("reduction", names)

    def module_name(self, names: Iterable[str] | None = None) -> list[str]:
        return self._column("module", names)

    def get_dicts(self) -> list[dict]:
        return [dict(e) for e in self]
