"""Ingest reads what it needs once: the labels file once for all its users, SOP UIDs from the DICOM index."""

import copy
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml

from clinicmm.config import load_dataset
from clinicmm.ingest.cohort import build_cohort, ingest
from clinicmm.ingest.leakage import find_leaks


def _every_labels_user(small_demo, tmp_path):
    """The demo with a label date (notes.window and the note-date check read it) and a site column (site splits)."""
    data = tmp_path / "dated_sites"
    shutil.copytree(small_demo[0].parent, data)
    notes = pd.read_csv(data / "notes.csv", dtype=str, keep_default_na=False)
    last = pd.to_datetime(notes["note_date"], errors="coerce").groupby(notes["patient_id"]).max()
    labels = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    labels["diagnosis_date"] = [
        (last.get(p, pd.Timestamp("2020-01-01")) + pd.Timedelta(days=1)).date().isoformat()
        for p in labels["patient_id"]
    ]
    labels["site"] = [f"H{i % 5}" for i in range(len(labels))]
    labels.to_csv(data / "labels.csv", index=False)
    cfg = yaml.safe_load((data / "dataset.yaml").read_text())
    cfg["labels"].update(date_column="diagnosis_date", site_column="site")
    cfg["notes"].update(date_column="note_date", window={"until_days_before": 0})
    (data / "dataset.yaml").write_text(yaml.safe_dump(cfg))
    return load_dataset(data / "dataset.yaml")


def test_ingest_reads_the_labels_file_once_for_labels_window_sites_and_leakage(small_demo, tmp_path, monkeypatch):
    spec = _every_labels_user(small_demo, tmp_path)
    labels_path = spec.resolve(spec.labels.path).resolve()
    reads: Counter = Counter()
    read_csv = pd.read_csv

    def counting(path, *args, **kwargs):
        if isinstance(path, (str, Path)):
            reads[Path(path).resolve()] += 1
        return read_csv(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", counting)
    cohort = ingest(spec, tmp_path / "ingest")
    assert reads[labels_path] == 1
    # every user of the table got it: the window ran, the split is by site, the note-date check passed
    assert any("split by site" in note for note in cohort.report["issues"])
    assert cohort.report["leakage_checks"]["note_date"] == 0
    assert cohort.notes["status"].eq("ok").any()


def test_the_labels_table_handed_over_gives_the_cohort_a_fresh_read_gives(small_demo, tmp_path):
    from clinicmm.ingest.labels import read_labels_table

    spec = _every_labels_user(small_demo, tmp_path)
    fresh = build_cohort(spec)
    handed = build_cohort(spec, labels_table=read_labels_table(spec))
    pd.testing.assert_frame_equal(handed.manifest, fresh.manifest)
    pd.testing.assert_frame_equal(handed.notes, fresh.notes)
    assert handed.report == fresh.report


@pytest.fixture(scope="module")
def built(small_demo):
    spec = load_dataset(small_demo[0])
    return spec, build_cohort(spec)


def _usable_series_in_two_splits(cohort):
    m = cohort.manifest[(cohort.manifest["status"] == "ok") & cohort.manifest["has_image"]]
    a = m[m["split"] == "train"].iloc[0]["patient_id"]
    b = m[m["split"] == "test"].iloc[0]["patient_id"]
    s = cohort.series
    ok = s["status"] == "ok"
    return s.index[ok & (s["patient_id"] == a)][0], s.index[ok & (s["patient_id"] == b)][0]


def test_the_index_sop_uids_are_the_files_own(built):
    """The check may take the UIDs from the index because the index holds exactly what the headers say."""
    _, cohort = built
    ok = cohort.series[cohort.series["status"] == "ok"]
    for files, sops in zip(ok["files"], ok["sop_uids"]):
        assert list(sops) == [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]


def test_image_leaks_take_sop_uids_from_the_index_not_the_files(built):
    """Two series with their own files, pixels and series UIDs, whose index rows list the same SOPInstanceUIDs:
    a leak found only by reading the index (the files say otherwise)."""
    spec, cohort = built
    cohort = copy.deepcopy(cohort)
    src, dst = _usable_series_in_two_splits(cohort)
    cohort.series.at[dst, "sop_uids"] = cohort.series.at[src, "sop_uids"]
    leaks = find_leaks(cohort, spec)
    assert [lk.check for lk in leaks] == ["image"]
    assert "SOPInstanceUID" in leaks[0].detail and "pixel data" not in leaks[0].detail
