"""Malformed VOC XML: every problem is reported per file and no NaN box reaches the index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mobilenetv2_dense.datasets.checks import DatasetError, DatasetWarning
from mobilenetv2_dense.datasets.detection.voc import VOCDetection, parse_voc_xml


def edit_xml(voc: Path, name: str, old: str, new: str) -> Path:
    xml = voc / "Annotations" / f"{name}.xml"
    text = xml.read_text()
    assert old in text, f"{old!r} not in {xml}"
    xml.write_text(text.replace(old, new, 1))
    return xml


@pytest.fixture
def voc(voc_root: Path, copy_tree) -> Path:
    return copy_tree(voc_root) / "VOC2012"


def test_fractional_corners_are_kept(voc: Path) -> None:
    """Many VOC-format exporters write sub-pixel corners: they are read as numbers, not refused."""
    edit_xml(voc, "v0", "<xmin>5</xmin>", "<xmin>5.5</xmin>")
    edit_xml(voc, "v0", "<xmax>24</xmax>", "<xmax>273.5e-1</xmax>")
    annotation = parse_voc_xml(voc / "Annotations" / "v0.xml")
    assert annotation.boxes[0].tolist() == [4.5, 6, 27.35, 30]
    dataset = VOCDetection(voc, split="train")
    assert dataset.index.boxes[0].tolist() == pytest.approx([4.5, 6, 27.35, 30])


@pytest.mark.parametrize(("old", "new", "detail"), [
    ("<xmax>24</xmax>", "", "object 0 'cat': no numeric <xmax>"),
    ("<ymin>7</ymin>", "<ymin></ymin>", "object 0 'cat': no numeric <ymin>"),
    ("<xmin>5</xmin>", "<xmin>five</xmin>", "object 0 'cat': no numeric <xmin>"),
    ("<bndbox><xmin>5</xmin><ymin>7</ymin><xmax>24</xmax><ymax>30</ymax>\n</bndbox>", "",
     "object 0 'cat': no <bndbox>"),
])
def test_malformed_object_is_reported_and_dropped_not_nan(voc: Path, old: str, new: str, detail: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    xml = edit_xml(voc, "v0", old, new)
    with pytest.warns(DatasetWarning, match="malformed object"):
        dataset = VOCDetection(voc, split="train")
    summary = capsys.readouterr().out
    assert "1 malformed object (box dropped)" in summary and f"{xml} ({detail})" in summary
    assert np.isfinite(dataset.index.boxes).all()
    assert "zero-area" not in summary  # named for what it is, not as a degenerate box
    # The image stays with its other object (the difficult dog), numbered as in the file.
    assert len(dataset) == 2 and dataset.index.offsets[1] == 1
    with pytest.raises(DatasetError, match=r"v0\.xml \(object 0 'cat'"):
        VOCDetection(voc, split="train", strict=True)
    with pytest.raises(ValueError, match=r"v0\.xml.*object 0 'cat'"):
        parse_voc_xml(xml)


def test_missing_size_is_reported_and_the_file_size_used(voc: Path, capsys: pytest.CaptureFixture) -> None:
    xml = edit_xml(voc, "v1", "<size><width>40</width><height>40</height><depth>3</depth></size>", "")
    assert parse_voc_xml(xml).size == (0, 0)
    with pytest.warns(DatasetWarning, match="without a usable <size>"):
        dataset = VOCDetection(voc, split="train")
    assert f"{xml} (no <size>)" in capsys.readouterr().out
    assert dataset.index.sizes[1].tolist() == [40, 40]
    assert dataset.index.boxes[dataset.index.offsets[1]].tolist() == [10, 10, 30, 35]  # the person, kept


def test_well_formed_tree_reports_nothing(voc: Path, recwarn: pytest.WarningsRecorder) -> None:
    VOCDetection(voc, split="train", strict=True)
    assert not [w for w in recwarn if issubclass(w.category, DatasetWarning)]
