"""index_dicom: discovery, per-file and per-series checks, choice of one series per patient."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_fixtures import truncate, uniform, write_series, write_slice  # noqa: E402

from clinicmm.config import ImagingSpec  # noqa: E402
from clinicmm.errors import ConfigError, InputError  # noqa: E402
from clinicmm.ingest.dicom import COLUMNS, index_dicom  # noqa: E402
from clinicmm.keys import Col, Status  # noqa: E402

SMALL = (5, 8, 8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A messy imaging root; returns the root and the paths each case needs."""
    root = tmp_path_factory.mktemp("imaging")
    vol = uniform(0.0, SMALL)
    a = write_series(root / "A" / "study1" / "series1", uniform(0.0, (6, 8, 8)), patient="PA")
    truncate(a[2])
    with warnings.catch_warnings():  # pydicom warns that CS values should be upper case: the index fixes that
        warnings.simplefilter("ignore", UserWarning)
        b = write_series(root / "deep" / "x" / "y" / "PB", vol, suffix="", patient="PB", body_part="Abdomen")
    (root / "README.txt").write_text("scanner export\n")
    (root / "x.dcm").write_text("not really DICOM\n")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    dup = write_series(root / "PC" / "dup", vol, patient="PC", shuffle=False)
    write_slice(root / "PC" / "dup" / "extra.dcm", vol[0], z=4.0, patient="PC", series=_series_of(dup[0]))
    d1 = write_series(root / "PD" / "s1", uniform(0.0, (6, 8, 8)), patient="PD")
    d2 = write_series(root / "PD" / "s2", uniform(0.0, (4, 8, 8)), patient="PD")
    noid = write_slice(root / "noid.dcm", vol[0], z=0.0, patient=None)
    few = write_series(root / "PE", uniform(0.0, (2, 8, 8)), patient="PE")
    us = write_series(root / "PF", vol, patient="PF", modality="US")
    return {"root": root, "a": a, "b": b, "dup": dup, "d1": d1, "d2": d2, "noid": noid, "few": few, "us": us}


def _series_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


@pytest.fixture(scope="module")
def index(tree: dict) -> pd.DataFrame:
    # not the defaults (every image modality, any slice count): a site that wants CT/MR/PET volumes of 4+ slices
    return index_dicom(ImagingSpec(root=tree["root"], modalities=["CT", "MR", "PT"], min_slices=4), tree["root"])


def _row(index: pd.DataFrame, source: Path) -> pd.Series:
    rows = index[index[Col.SOURCE] == str(source)]
    assert len(rows) == 1, f"expected one row for {source}, got {len(rows)}"
    return rows.iloc[0]


def test_columns_and_one_ok_row_per_usable_patient(index: pd.DataFrame) -> None:
    assert tuple(index.columns) == COLUMNS
    ok = index[index[Col.STATUS] == Status.OK]
    assert sorted(ok[Col.PATIENT]) == ["PA", "PB", "PD"]
    assert ok[Col.PATIENT].is_unique


def test_every_file_is_accounted_for_once(index: pd.DataFrame, tree: dict) -> None:
    on_disk = {str(p) for p in tree["root"].rglob("*") if p.is_file() and not p.name.startswith(".")}
    listed = [f for files in index[Col.FILES] for f in files]
    assert sorted(listed) == sorted(on_disk)
    assert not any(".DS_Store" in f for f in listed)


def test_nested_series_without_suffix_is_indexed_sorted_by_position(index: pd.DataFrame, tree: dict) -> None:
    row = _row(index, tree["b"][0].parent)
    assert row[Col.STATUS] == Status.OK and row[Col.N_SLICES] == 5
    assert row[Col.BODY_PART] == "ABDOMEN" and row[Col.MODALITY_TAG] == "CT"
    assert row[Col.FILES] == [str(p) for p in tree["b"]]  # written at z = 0, 2, 4 ... with shuffled names
    assert sorted(row[Col.FILES]) != row[Col.FILES]


def test_non_dicom_files_are_skipped_with_reason(index: pd.DataFrame, tree: dict) -> None:
    for name in ("README.txt", "x.dcm"):
        row = _row(index, tree["root"] / name)
        assert row[Col.STATUS] == Status.SKIPPED
        assert "not a DICOM file" in row[Col.REASON] and name in row[Col.REASON]
        assert row[Col.PATIENT] == ""


def test_truncated_slice_is_skipped_and_rest_of_series_kept(index: pd.DataFrame, tree: dict) -> None:
    bad = tree["a"][2]
    row = _row(index, bad)
    assert row[Col.STATUS] == Status.SKIPPED and "truncated" in row[Col.REASON]
    assert bad.name in row[Col.REASON] and row[Col.PATIENT] == "PA"
    series = _row(index, bad.parent)
    assert series[Col.STATUS] == Status.OK and series[Col.N_SLICES] == 5
    assert str(bad) not in series[Col.FILES]
    assert "1 file(s) of this series skipped" in series[Col.REASON]


def test_duplicated_positions_skip_the_series(index: pd.DataFrame, tree: dict) -> None:
    row = _row(index, tree["dup"][0].parent)
    assert row[Col.STATUS] == Status.SKIPPED
    assert "ImagePositionPatient" in row[Col.REASON] and "extra.dcm" in row[Col.REASON]
    assert not (index[Col.PATIENT].eq("PC") & index[Col.STATUS].eq(Status.OK)).any()


def test_patient_with_two_series_keeps_the_longer(index: pd.DataFrame, tree: dict) -> None:
    chosen, other = _row(index, tree["d1"][0].parent), _row(index, tree["d2"][0].parent)
    assert chosen[Col.STATUS] == Status.OK
    assert chosen[Col.REASON].startswith("chosen: most slices, then thinnest slices, then latest study (6 slices")
    assert other[Col.STATUS] == Status.SKIPPED and other[Col.REASON].startswith("not chosen")


def test_missing_patient_id_names_the_tag(index: pd.DataFrame, tree: dict) -> None:
    row = _row(index, tree["noid"])
    assert row[Col.STATUS] == Status.SKIPPED and "PatientID (0010,0020)" in row[Col.REASON]


def test_too_few_slices_and_wrong_modality_are_recorded(index: pd.DataFrame, tree: dict) -> None:
    few = _row(index, tree["few"][0].parent)
    assert few[Col.STATUS] == Status.SKIPPED and "min_slices" in few[Col.REASON]
    us = _row(index, tree["us"][0].parent)
    assert us[Col.STATUS] == Status.SKIPPED and "'US'" in us[Col.REASON] and "imaging.modalities" in us[Col.REASON]


def test_one_missing_byte_counts_as_truncated(tmp_path: Path) -> None:
    files = write_series(tmp_path / "s", uniform(0.0, (4, 8, 8)), patient="P9")
    truncate(files[0], drop=1)
    truncate(files[1], drop=files[1].stat().st_size // 2)  # cut inside the header
    index = index_dicom(ImagingSpec(root=tmp_path, min_slices=3), tmp_path)
    assert "truncated" in _row(index, files[0])[Col.REASON]
    assert "truncated" in _row(index, files[1])[Col.REASON]
    series = _row(index, files[0].parent)
    assert series[Col.STATUS] == Status.SKIPPED and "only 2 usable slice(s)" in series[Col.REASON]


def test_missing_or_malformed_geometry_names_the_tag(tmp_path: Path) -> None:
    files = write_series(tmp_path / "s", uniform(0.0, (5, 8, 8)), patient="P1")
    for path, edit in ((files[0], lambda ds: delattr(ds, "ImagePositionPatient")),
                       (files[1], lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 1]))):  # fmt: skip
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(path)
    index = index_dicom(ImagingSpec(root=tmp_path), tmp_path)
    assert "ImagePositionPatient (0020,0032)" in _row(index, files[0])[Col.REASON]
    assert "ImageOrientationPatient (0020,0037) needs 6 numbers" in _row(index, files[1])[Col.REASON]
    assert _row(index, files[2].parent)[Col.N_SLICES] == 3


def test_custom_patient_tag_and_bad_keyword(tmp_path: Path) -> None:
    write_series(tmp_path / "s", uniform(0.0, (4, 8, 8)), patient="P1")
    index = index_dicom(ImagingSpec(root=tmp_path, patient_tag="PatientName"), tmp_path)
    assert (index[Col.STATUS] == Status.SKIPPED).all()
    assert index[Col.REASON].str.contains("PatientName (0010,0010)", regex=False).all()
    with pytest.raises(ConfigError, match="patient_tag"):
        index_dicom(ImagingSpec(root=tmp_path, patient_tag="PatientIdentifier"), tmp_path)


def test_empty_root_gives_empty_table_with_columns(tmp_path: Path) -> None:
    index = index_dicom(ImagingSpec(root=tmp_path), tmp_path)
    assert index.empty and tuple(index.columns) == COLUMNS
    assert np.issubdtype(index[Col.N_SLICES].dtype, np.integer)
    with pytest.raises(InputError, match="not a folder"):
        index_dicom(ImagingSpec(root=tmp_path), tmp_path / "absent")
