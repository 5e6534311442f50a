"""How a dataset's mask files hold its labels: :class:`MaskDecoder` turns one file into train labels.

Train labels are what the task learns and scores: ``(H, W)`` uint8, ``0..K-1`` for the K classes and 255 (void,
ignored by the loss and the metrics). Datasets store them in other ways:

- index masks (palette or grayscale PNGs) holding the labels as they are, with their own void value
  (``ignore_index``), or shifted by one with 0 as "other" (ADE20K; mmsegmentation's ``reduce_zero_label``);
- ids that a table maps to train labels (Cityscapes' ``labelIds`` -> ``trainIds``);
- colour masks (RGB PNGs) where a colour table names the class of each colour.

Every stored value or colour the dataset does not define makes the file a problem that the set-up check reports
by name, instead of a label silently trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .voc import IGNORE_INDEX, MaskError

Colour = tuple[int, int, int]


def colour_codes(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` colours -> ``(...)`` int32 codes ``R << 16 | G << 8 | B``, one number per colour."""
    rgb = np.asarray(rgb)[..., :3].astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _show_colours(codes: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in list(codes)[:limit])
    return shown + (", ..." if len(codes) > limit else "")


@dataclass(frozen=True, eq=False)
class MaskDecoder:
    """Reads a mask file as train labels ``(H, W)`` uint8 (``0..K-1``, 255 void), in its displayed orientation.

    Call it as ``labels, from_colours = decoder(path)``: palette (``P``) and grayscale (``L``) PNGs are mapped through
    ``lookup``, RGB(A) PNGs through the colour table; ``from_colours`` says which. Raises
    :class:`~mobilenetv2_dense.datasets.segmentation.voc.MaskError` naming the file and the values or colours the
    dataset does not define. Build one with :meth:`indices`, :meth:`from_ids` or :meth:`with_colours`.

    Args:
        lookup: ``(256,)`` int16, stored value -> train label, 255 void, or -1 (not a value of this dataset).
        stored: what the stored values are, for messages (``"Cityscapes labelIds 0..33"``).
        colours: ``(M,)`` int32 colour codes (:func:`colour_codes`) of RGB masks, sorted; ``None``: RGB masks are
            refused.
        colour_labels: ``(M,)`` uint8, the train label of each colour (255 for a void colour).
    """

    lookup: np.ndarray
    stored: str
    colours: np.ndarray | None = None
    colour_labels: np.ndarray | None = None
    converted_note = "RGB masks converted through the colour table"  # the set-up summary's count

    @classmethod
    def indices(cls, num_classes: int, *, ignore_index: int = IGNORE_INDEX,
                reduce_zero_label: bool = False) -> MaskDecoder:
        """Index masks: stored ``0..K-1`` are the labels and ``ignore_index`` is void; with ``reduce_zero_label``,
        stored 0 is void ("other") and ``1..K`` are labels ``0..K-1`` (ADE20K's convention)."""
        if not 1 <= num_classes <= IGNORE_INDEX - int(reduce_zero_label):
            raise ValueError(f"MaskDecoder: {num_classes} classes do not fit 8-bit masks beside the void label; "
                             f"use at most {IGNORE_INDEX - int(reduce_zero_label)} classes")
        first = int(reduce_zero_label)
        if not 0 <= ignore_index <= 255 or first <= ignore_index < first + num_classes:
            raise ValueError(f"MaskDecoder: ignore_index={ignore_index} is the stored value of class "
                             f"{ignore_index - first}; give the value your masks use for unlabelled pixels, outside "
                             f"{first}..{first + num_classes - 1} and in 0..255 (255 by default)")
        lookup = np.full(256, -1, dtype=np.int16)
        lookup[first:first + num_classes] = np.arange(num_classes)
        lookup[ignore_index] = IGNORE_INDEX
        stored = f"labels {first}..{first + num_classes - 1} of {num_classes} classes"
        if reduce_zero_label:
            lookup[0] = IGNORE_INDEX
            stored += ", 0 (other, void)"
        return cls(lookup, stored + f" and void {ignore_index}")

    @classmethod
    def from_ids(cls, table: Mapping[int, int], stored: str) -> MaskDecoder:
        """Stored ids mapped by ``table`` (id -> train label, 255 void), e.g. Cityscapes' labelId -> trainId."""
        lookup = np.full(256, -1, dtype=np.int16)
        for stored_id, label in table.items():
            lookup[stored_id] = label
        return cls(lookup, stored)

    def with_colours(self, colours: Sequence[Colour], ignore_colours: Sequence[Colour] = ()) -> MaskDecoder:
        """This decoder, and RGB masks read through a colour table: ``colours[k]`` is class ``k``'s colour, each of
        ``ignore_colours`` is void. Index masks are still read through ``lookup``."""
        table = list(colours) + list(ignore_colours)
        bad = [c for c in table if len(c) != 3 or not all(0 <= int(v) <= 255 for v in c)]
        if bad:
            raise ValueError(f"MaskDecoder: colours must be [R, G, B] with values 0..255, got {bad[:4]}")
        codes = colour_codes(np.array(table, dtype=np.int64).reshape(-1, 3))
        labels = np.array([*range(len(colours)), *[IGNORE_INDEX] * len(ignore_colours)], dtype=np.uint8)
        unique, counts = np.unique(codes, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"MaskDecoder: colour(s) {_show_colours(unique[counts > 1].tolist())} are given twice "
                             "(for two classes, or for a class and as void); give each colour once")
        order = np.argsort(codes)
        return MaskDecoder(self.lookup, self.stored, codes[order], labels[order])

    @property
    def table(self) -> np.ndarray:
        """``(256,)`` uint8 stored value -> train label (values of no class at 255; :meth:`map_values` refuses
        them first)."""
        return np.where(self.lookup < 0, IGNORE_INDEX, self.lookup).astype(np.uint8)

    def map_values(self, values: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
        """``(H, W)`` uint8 stored values -> train labels; raises :class:`MaskError` naming values of no class."""
        present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))  # vectorised over the pixels
        unknown = present[self.lookup[present] < 0]
        if unknown.size:
            raise MaskError(f"mask {str(path)!r} holds values {unknown.tolist()} that are not {self.stored}; fix "
                            "the mask, or the classes / ignore_index the dataset is read with",
                            kind="masks with labels out of range")
        return self.table[values]

    def map_colours(self, rgb: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
        """``(H, W, 3)`` colours -> train labels through the colour table; raises :class:`MaskError` naming the file
        and the colours not in the table (or that there is no table)."""
        if self.colours is None:
            raise MaskError(f"mask {str(path)!r} is an RGB image, but no colour table is given: this dataset reads "
                            "masks of class indices: save it as a palette / grayscale PNG of indices (Cityscapes: the "
                            "*_labelIds.png files; "
                            "ADE20K: the annotations/*.png files), or read colour masks with "
                            "SegmentationFolderDataModule and each class's colour (data.init_args.colors, or colors: "
                            "in the classes YAML)", kind="RGB masks without a colour table")
        codes = colour_codes(rgb)
        # A sorted search over the few table colours: one vectorised pass over the pixels, no per-colour loop.
        position = np.searchsorted(self.colours, codes).clip(max=len(self.colours) - 1)
        found = self.colours[position] == codes
        if not found.all():
            unknown = np.unique(codes[~found]).tolist()
            raise MaskError(f"RGB mask {str(path)!r} has {len(unknown)} colour(s) not in the colour table: "
                            f"{_show_colours(unknown)}; add them to colors (a class) or ignore_colors (void)",
                            kind="masks with colours not in the colour table")
        return self.colour_labels[position]

    def __call__(self, path: str | Path) -> tuple[np.ndarray, bool]:
        path = Path(path)
        try:
            with Image.open(path) as opened:
                image = ImageOps.exif_transpose(opened)  # keeps the mode and palette
                mode, array = image.mode, np.array(image)
        except Exception as error:  # noqa: BLE001 - any decoder error means unreadable; re-raised with the file
            raise MaskError(f"cannot read mask {str(path)!r}: {type(error).__name__}: {error}") from error
        if mode in ("P", "L"):
            return self.map_values(array, path), False
        if mode in ("RGB", "RGBA"):
            return self.map_colours(array, path), True
        raise MaskError(f"mask {str(path)!r} has PIL mode {mode}; expected an 8-bit palette (P) or grayscale (L) PNG "
                        "of class indices, or an RGB colour mask with a colour table")
