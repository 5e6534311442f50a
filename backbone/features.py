"""Feature metadata: what a backbone can hand to a head, with timm's ``FeatureInfo`` interface."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Index = int | str | Sequence[int | str] | None


class FeatureInfo(list):
    """Every tappable feature in network order (so ordered by stride), and which of them the model returns.

    Behaves as ``timm.models.FeatureInfo`` (``tests/backbone/test_timm_contract.py`` checks it call for call
    against timm's own class and against ``timm.create_model(..., features_only=True)``)::

        info.channels()             # [24, 32, 96, 320]: the returned features (out_indices), as timm
        info.reduction()            # [4, 8, 16, 32]
        info.get_dicts(keys=["num_chs", "reduction"])
        info.get("module")          # module paths of the returned features
        info.channels(3)            # an explicit index addresses the whole list, returned or not, as timm
        info[0], len(info), list(info)   # the whole list too, as timm
        info.out_indices            # positions of the returned features in the whole list

    ``idx`` is ``None`` (the returned features), an int, or a list of ints; a feature name may stand for its
    index anywhere (``info.channels("stage6_expansion")``, ``info["stage7"]``). For a list of the returned
    features alone, where every index counts returned features (``channels(i) == channels()[i]``), use
    ``select`` (a model's ``out_feature_info``).

    Each entry has timm's keys plus ``name``, ``stage`` and ``location``::

        {"name": "stage6_expansion", "num_chs": 576, "reduction": 16, "module": "stages.5.0.expand",
         "stage": 6, "location": "expansion", "index": 9}

    ``location`` is ``"bottleneck"`` for a stage output and ``"expansion"`` for the output of the 1x1
    expansion conv of a stage's first block (taken before its depthwise conv, as SSDLite needs).

    Args:
        entries: one dict per feature, each with ``name``, ``num_chs``, ``reduction`` and ``module``.
        out_indices: positions of the returned features; an int ``n`` means the last ``n`` (timm's rule);
            ``None`` means every entry.
    """

    def __init__(self, entries: Iterable[dict], out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__(dict(e, index=i) for i, e in enumerate(entries))
        self._by_name = {e["name"]: i for i, e in enumerate(self)}
        if out_indices is None:
            out_indices = range(len(self))
        elif isinstance(out_indices, int):
            out_indices = range(len(self) - out_indices, len(self))
        self.out_indices: tuple[int, ...] = tuple(self._position(i) for i in out_indices)

    # ------------------------------------------------------------------------------------ timm's interface
    @property
    def info(self) -> list[dict]:
        """The whole list (timm's attribute)."""
        return list(self)

    def from_other(self, out_indices: int | Sequence[int]) -> FeatureInfo:
        """The same features with other ``out_indices`` (timm's method)."""
        return FeatureInfo(self, out_indices)

    def get(self, key: str, idx: Index = None) -> Any:
        """``key`` of the returned features (``idx=None``), of entry ``idx``, or of each entry of a list.

        Legacy form: ``get(name)`` with a feature name returns that feature's dict (same as ``info[name]``).
        """
        if idx is None and key in self._by_name:
            return self[key]
        if idx is None:
            return [self[i][key] for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: Index = None) -> list[dict] | dict:
        """Copies of the dicts (only ``keys`` when given) of the returned features, of entry ``idx`` or of each
        entry of a list of indices."""
        pick = (lambda e: dict(e)) if keys is None else (lambda e: {k: e[k] for k in keys})
        if idx is None:
            return [pick(self[i]) for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [pick(self[i]) for i in idx]
        return pick(self[idx])

    def channels(self, idx: Index = None) -> list[int] | int:
        return self.get("num_chs", idx)

    def reduction(self, idx: Index = None) -> list[int] | int:
        return self.get("reduction", idx)

    def module_name(self, idx: Index = None) -> list[str] | str:
        return self.get("module", idx)

    def __getitem__(self, item: int | slice | str) -> Any:
        return super().__getitem__(self._position(item) if isinstance(item, str) else item)

    # ---------------------------------------------------------------------------------- this project's own
    @property
    def names(self) -> list[str]:
        """Names of every entry (the whole list)."""
        return [e["name"] for e in self]

    @property
    def out_names(self) -> list[str]:
        """Names of the returned features."""
        return [self[i]["name"] for i in self.out_indices]

    def select(self, names: Iterable[str]) -> FeatureInfo:
        """A list of the entries for ``names`` alone, kept in network order, all of them returned."""
        wanted = {self._position(name) for name in names}
        return FeatureInfo(e for i, e in enumerate(self) if i in wanted)

    def _position(self, item: int | str) -> int:
        if isinstance(item, str):
            if item not in self._by_name:
                raise KeyError(f"unknown feature {item!r}; available features: {', '.join(self.names)}")
            return self._by_name[item]
        if not -len(self) <= item < len(self):
            raise IndexError(f"feature index {item} is out of range for {len(self)} features ({', '.join(self.names)})")
        return item % len(self)
