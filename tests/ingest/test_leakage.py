"""Leakage checks: each planted leak fails the run with what and where; the clean demo cohort passes."""

import copy
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest

from clinicmm.config import load_dataset
from clinicmm.errors import StageError
from clinicmm.ingest.cohort import build_cohort, ingest
from clinicmm.ingest.leakage import check_leakage, find_leaks


@pytest.fixture(scope="module")
def built(small_demo):
    spec = load_dataset(small_demo[0])
    return spec, build_cohort(spec)


def _fresh(built):
    spec, cohort = built
    return spec, copy.deepcopy(cohort)


def _two_in_different_splits(cohort, column="has_image"):
    m = cohort.manifest[
        (cohort.manifest["status"] == "ok") & (cohort.manifest["split"] != "") & cohort.manifest[column]
    ]
    a = m[m["split"] == "train"].iloc[0]["patient_id"]
    b = m[m["split"] == "test"].iloc[0]["patient_id"]
    return a, b


def _series_rows_in_two_splits(cohort):
    """(series index, row of a train patient's series, row of a test patient's series, the test patient)."""
    a, b = _two_in_different_splits(cohort)
    s = cohort.series
    ok = s["status"] == "ok"
    return s, s.index[ok & (s["patient_id"] == a)][0], s.index[ok & (s["patient_id"] == b)][0], b


def test_the_clean_demo_cohort_passes_every_check(built):
    spec, cohort = built
    assert find_leaks(cohort, spec) == []
    assert set(check_leakage(cohort, spec)) == {"patient", "image", "note", "label_column", "note_date"}


def test_a_patient_in_two_splits_under_two_spellings_fails(built):
    spec, cohort = _fresh(built)
    a, _ = _two_in_different_splits(cohort)
    row = cohort.manifest[cohort.manifest["patient_id"] == a].copy()
    row["patient_id"], row["split"] = f" {a.lower()}", "test"
    cohort.manifest = pd.concat([cohort.manifest, row], ignore_index=True)
    with pytest.raises(StageError, match=r"- patient: .*" + a):
        check_leakage(cohort, spec)


def test_the_same_series_in_two_splits_fails_naming_the_uids(built):
    spec, cohort = _fresh(built)
    s, src, dst, b = _series_rows_in_two_splits(cohort)
    s.at[dst, "files"], s.at[dst, "sop_uids"] = s.at[src, "files"], s.at[src, "sop_uids"]  # as the index reads them
    with pytest.raises(StageError) as err:
        check_leakage(cohort, spec)
    assert (
        "SOPInstanceUID" in str(err.value) and "pixel data" in str(err.value) and "- image: series in" in str(err.value)
    )


def test_a_copy_with_new_uids_is_still_caught_by_its_pixel_hash(built, tmp_path):
    spec, cohort = _fresh(built)
    s, src, dst, b = _series_rows_in_two_splits(cohort)
    copies, uids = [], []
    for i, f in enumerate(s.at[src, "files"]):
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.PatientID = "1.2.3.4", b
        ds.save_as(tmp_path / f"{i}.dcm")
        copies.append(str(tmp_path / f"{i}.dcm"))
        uids.append(ds.SOPInstanceUID)
    s.at[dst, "files"], s.at[dst, "sop_uids"] = copies, uids
    leaks = find_leaks(cohort, spec)
    assert [lk.check for lk in leaks] == ["image"]
    assert "pixel data" in leaks[0].detail and "SOPInstanceUID" not in leaks[0].detail


def test_a_duplicated_note_in_the_notes_file_stops_ingest_naming_its_rows(small_demo, built, tmp_path):
    spec, cohort = built
    a, b = _two_in_different_splits(cohort, "has_note")
    data = tmp_path / "cohort"
    shutil.copytree(small_demo[0].parent, data)
    notes = pd.read_csv(data / "notes.csv", dtype=str, keep_default_na=False)
    own = notes.loc[notes["patient_id"] == a, "text"]
    text = own.loc[own.str.len().idxmax()]
    copied = {
        **notes.loc[notes["patient_id"] == b].iloc[0].to_dict(),
        "note_id": "LEAK-1",
        "text": "  " + text.upper() + "\n",
    }
    pd.concat([notes, pd.DataFrame([copied])], ignore_index=True).to_csv(data / "notes.csv", index=False)
    with pytest.raises(
        StageError, match=r"- note: the same note text is in notes\.csv row \d+ .*notes\.csv row"
    ) as err:
        ingest(load_dataset(data / "dataset.yaml"), tmp_path / "out")
    assert "fix (note)" in str(err.value)
    assert not (tmp_path / "out" / "cohort.parquet").exists()  # nothing written for a leaky cohort


def test_a_genomics_column_derived_from_the_label_fails_and_a_random_one_does_not(built):
    spec, cohort = _fresh(built)
    labels = cohort.manifest.set_index("patient_id")["label"]
    expr = cohort.expression
    codes = {lab: float(i) for i, lab in enumerate(sorted(labels.unique()))}
    expr["RANDOMGENE"] = np.random.default_rng(0).normal(size=len(expr))
    assert find_leaks(cohort, spec) == []
    expr["TYPECODE"] = [codes.get(labels.get(p, ""), np.nan) * 10 + 3 for p in expr.index]
    leaks = find_leaks(cohort, spec)
    assert [lk.check for lk in leaks] == ["label_column"]
    assert "'TYPECODE'" in leaks[0].detail and "expression.tsv" in leaks[0].detail


def _dated(small_demo, tmp_path, shift_days):
    """A copy of the demo whose labels carry a diagnosis date ``shift_days`` after each patient's last note."""
    import yaml

    data = tmp_path / f"dated{shift_days}"
    shutil.copytree(small_demo[0].parent, data)
    notes = pd.read_csv(data / "notes.csv", dtype=str, keep_default_na=False)
    last = pd.to_datetime(notes["note_date"], errors="coerce").groupby(notes["patient_id"]).max()
    labels = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    labels["diagnosis_date"] = [
        (last.get(p, pd.Timestamp("2020-01-01")) + pd.Timedelta(days=shift_days)).date().isoformat()
        for p in labels["patient_id"]
    ]
    labels.to_csv(data / "labels.csv", index=False)
    cfg = yaml.safe_load((data / "dataset.yaml").read_text())
    cfg["labels"]["date_column"], cfg["notes"]["date_column"] = "diagnosis_date", "note_date"
    (data / "dataset.yaml").write_text(yaml.safe_dump(cfg))
    return load_dataset(data / "dataset.yaml")


def test_notes_dated_after_the_label_date_fail_and_earlier_ones_pass(small_demo, tmp_path):
    clean = _dated(small_demo, tmp_path, 1)
    assert find_leaks(build_cohort(clean), clean) == []
    late = _dated(small_demo, tmp_path, -1)  # every patient's last note now comes a day after the diagnosis
    leaks = find_leaks(build_cohort(late), late)
    assert leaks and {lk.check for lk in leaks} == {"note_date"}
    assert "notes.csv row" in leaks[0].detail and "diagnosis_date" in leaks[0].detail


def test_a_short_boilerplate_note_shared_across_splits_is_not_a_leak(built):
    spec, cohort = _fresh(built)
    a, b = _two_in_different_splits(cohort, "has_note")
    notes = cohort.notes
    for pid in (a, b):
        notes.loc[notes.index[(notes["patient_id"] == pid) & (notes["status"] == "ok")][0], "text"] = (
            "Seen in clinic. No change."
        )
    assert find_leaks(cohort, spec) == []
