"""Series selection rules from the dataset spec, parallel header scans, and the spooled index."""

from __future__ import annotations

import sys
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "imaging"))
from dicom_fixtures import uniform, write_series  # noqa: E402

from clinicmm.config import ImagingSpec  # noqa: E402
from clinicmm.errors import ConfigError  # noqa: E402
from clinicmm.io.dicom import index_dicom  # noqa: E402
from clinicmm.keys import Col, Status  # noqa: E402


def _tag(paths: list[Path], **values) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Patient P: a 6-slice 5 mm 'SCOUT' in 2019, a 5-slice 1 mm 'AXIAL' in 2020, a 5-slice 2 mm 'AXIAL' in 2021."""
    root = tmp_path_factory.mktemp("selection")
    _tag(write_series(root / "scout", uniform(0.0, (6, 8, 8)), patient="P"), SliceThickness=5.0, StudyDate="20190101", SeriesDescription="SCOUT")
    _tag(write_series(root / "thin", uniform(0.0, (5, 8, 8)), patient="P"), SliceThickness=1.0, StudyDate="20200101", SeriesDescription="AXIAL 1mm")
    _tag(write_series(root / "late", uniform(0.0, (5, 8, 8)), patient="P"), SliceThickness=2.0, StudyDate="20210101", SeriesDescription="Axial 2mm")
    return root


def _chosen(root: Path, **spec) -> str:
    index = index_dicom(ImagingSpec(root=root, **spec), root)
    ok = index[index[Col.STATUS] == Status.OK]
    assert len(ok) == 1
    return Path(ok[Col.SOURCE].iloc[0]).name


def test_default_prefers_most_slices(root) -> None:
    assert _chosen(root) == "scout"


@pytest.mark.parametrize(("prefer", "expected"), [(["thinnest"], "thin"), (["latest"], "late"), (["most_slices", "latest"], "scout")])
def test_preferences_in_order(root, prefer, expected) -> None:
    assert _chosen(root, prefer=prefer) == expected


def test_description_pattern_and_the_reason_recorded(root) -> None:
    index = index_dicom(ImagingSpec(root=root, series_description=r"^axial", prefer=["latest"]), root)
    by_folder = {Path(s).name: r for s, r in zip(index[Col.SOURCE], index.to_dict("records"))}
    assert by_folder["late"][Col.STATUS] == Status.OK and by_folder["late"][Col.REASON].startswith("chosen: latest study")
    assert "does not match imaging.series_description '^axial'" in by_folder["scout"][Col.REASON]
    assert by_folder["thin"][Col.REASON].startswith("not chosen: 5 slices, 1 mm, study date 20200101")


def test_a_bad_pattern_is_a_config_error(root) -> None:
    with pytest.raises(ConfigError, match="series_description"):
        index_dicom(ImagingSpec(root=root, series_description="(unclosed"), root)


def test_two_workers_give_the_same_index(root, tmp_path) -> None:
    one = index_dicom(ImagingSpec(root=root), root)
    two = index_dicom(ImagingSpec(root=root, workers=2), root, spool=tmp_path)
    assert one.to_dict("records") == two.to_dict("records")
    assert list(tmp_path.iterdir()) == [], "the spooled index is removed after the scan"
