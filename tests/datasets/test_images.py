"""``load_or_replace``: the one retry loop of every dataset's ``__getitem__``."""

import pytest

from mobilenetv2_dense.datasets.checks import DatasetWarning
from mobilenetv2_dense.datasets.images import MAX_REPLACEMENTS, ImageReadError, load_or_replace


def loader(broken: set[int]):
    def load(index: int) -> int:
        if index in broken:
            raise ImageReadError(f"cannot decode image 'img{index}.jpg'")
        return index

    return load


def test_a_broken_sample_is_replaced_by_the_next_wrapping_around() -> None:
    assert load_or_replace(loader(set()), 2, 5) == 2
    with pytest.warns(DatasetWarning, match=r"img4\.jpg.*using sample 0 instead"):
        assert load_or_replace(loader({4}), 4, 5) == 0


def test_gives_up_after_max_replacements_naming_the_start() -> None:
    length = MAX_REPLACEMENTS + 5
    with pytest.warns(DatasetWarning), pytest.raises(ImageReadError, match=f"{MAX_REPLACEMENTS + 1} samples"):
        load_or_replace(loader(set(range(MAX_REPLACEMENTS + 1))), 0, length)
    with pytest.warns(DatasetWarning):  # the sample after the broken run is still reached
        assert load_or_replace(loader(set(range(MAX_REPLACEMENTS))), 0, length) == MAX_REPLACEMENTS
    with pytest.warns(DatasetWarning), pytest.raises(ImageReadError, match="3 samples in a row"):
        load_or_replace(loader({0, 1, 2}), 1, 3)  # a small dataset is tried once round
