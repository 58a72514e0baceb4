"""Ingest: modalities linked per patient, patient-level stratified split, every bad input recorded."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from clinicmm.config import load_dataset
from clinicmm.errors import InputError
from clinicmm.ingest.cohort import Cohort, assign_splits, build_cohort, ingest
from clinicmm.keys import HAS, Col, Modality


@pytest.fixture(scope="module")
def cohort(small_demo):
    return build_cohort(load_dataset(small_demo[0]))


def _skipped_text(cohort) -> str:
    return json.dumps(cohort.report["skipped"])


def test_every_injected_bad_input_is_recorded_with_its_reason(cohort, small_demo):
    _, truth = small_demo
    skipped = cohort.report["skipped"]
    for bad in truth["bad_inputs"]:
        kind = bad["kind"]
        if kind == "duplicate_gene_column":
            assert any(bad["column"] in i and "appears 2 times" in i for i in cohort.report["issues"])
            continue
        hits = [
            s
            for s in skipped
            if Path(bad["file"]).name in s["source"]
            or (s["patient_id"] == bad["patient_id"] and kind == "unlabelled_patient")
        ]
        assert hits, f"{kind} not recorded"
        reason = " ".join(h["reason"] for h in hits)
        expected = {
            "truncated_dicom": "truncated",
            "non_dicom_file": "not a DICOM file",
            "text_as_dcm": "not a DICOM file",
            "empty_note": "empty note",
            "unlabelled_patient": "no label",
        }[kind]
        assert expected in reason
    empty = next(b for b in truth["bad_inputs"] if b["kind"] == "empty_note")
    assert any(s["row"] == empty["row"] and s["modality"] == "note" for s in skipped)


def test_bad_inputs_do_not_stop_the_rest_of_the_cohort(cohort, small_demo):
    _, truth = small_demo
    m = cohort.manifest.set_index(Col.PATIENT.value)
    assert set(m.index) == set(truth["patients"])
    assert (m[Col.STATUS] == "ok").all()
    truncated = next(b for b in truth["bad_inputs"] if b["kind"] == "truncated_dicom")["patient_id"]
    assert m.loc[truncated, Col.HAS_IMAGE]  # 7 of 8 slices remain: the series is still used
    unlabelled = next(b for b in truth["bad_inputs"] if b["kind"] == "unlabelled_patient")["patient_id"]
    assert m.loc[unlabelled, Col.LABEL] == "" and m.loc[unlabelled, Col.SPLIT] == ""


def test_missing_modalities_match_what_the_generator_left_out(cohort, small_demo):
    _, truth = small_demo
    m = cohort.manifest.set_index(Col.PATIENT.value)
    for pid, t in truth["patients"].items():
        for modality in Modality:
            lacking = t["missing"].split("+") if t["missing"] else []  # one modality, or all but one
            assert m.loc[pid, HAS[modality]] == (modality.value not in lacking), (pid, modality)


def test_split_is_by_patient_stratified_and_deterministic(cohort, small_demo):
    m = cohort.manifest
    labelled = m[m[Col.LABEL] != ""]
    assert labelled[Col.PATIENT].is_unique
    assert set(labelled[Col.SPLIT]) == {"train", "val", "test"}
    for _, group in labelled.groupby(Col.LABEL.value):
        if len(group) >= 3:
            assert set(group[Col.SPLIT]) == {"train", "val", "test"}
    again = build_cohort(load_dataset(small_demo[0])).manifest
    pd.testing.assert_series_equal(m[Col.SPLIT], again[Col.SPLIT])


def test_rare_label_goes_to_train_with_a_note():
    manifest = pd.DataFrame({"patient_id": [f"P{i}" for i in range(8)], "label": ["A"] * 6 + ["B"] * 2, "status": "ok"})
    out, notes = assign_splits(manifest, 0.2, 0.2, seed=0)
    assert set(out.loc[out["label"] == "B", "split"]) == {"train"}
    assert any("'B' has only 2" in n for n in notes)


def test_ingest_writes_manifest_indexes_and_a_readable_report(small_demo, tmp_path):
    ingest(load_dataset(small_demo[0]), tmp_path / "ingest")
    loaded = Cohort.load(tmp_path / "ingest")
    assert len(loaded.manifest) == len(small_demo[1]["patients"])
    assert loaded.expression is not None and loaded.expression.index.name == "patient_id"
    report = (tmp_path / "ingest" / "report.md").read_text()
    assert "## Skipped inputs" in report and "truncated" in report and "| image |" in report


def test_missing_label_column_names_file_key_and_columns(small_demo, tmp_path):
    path, _ = small_demo
    data = yaml.safe_load(path.read_text())
    data["labels"]["label_column"] = "diagnosis"
    data = {k: v for k, v in data.items()}
    bad = path.parent / "bad_labels.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as exc:
        build_cohort(load_dataset(bad))
    msg = str(exc.value)
    assert "'diagnosis'" in msg and "labels.label_column" in msg and "cancer_type" in msg and "labels.csv" in msg
    bad.unlink()


def test_a_dataset_with_no_usable_patient_is_an_error(tmp_path):
    (tmp_path / "labels.csv").write_text("patient_id,cancer_type\nP1,LUAD\n")
    (tmp_path / "notes.csv").write_text("patient_id,text\nP1,\n")
    (tmp_path / "d.yaml").write_text("name: x\nlabels: {path: labels.csv}\nnotes: {path: notes.csv}\n")
    with pytest.raises(InputError, match="(?s)no usable patient found.*empty note text in notes.csv row 1"):
        ingest(load_dataset(tmp_path / "d.yaml"), tmp_path / "out")
    assert (tmp_path / "out" / "report.md").is_file()  # the reasons are kept (issue 15) ...
    assert not (tmp_path / "out" / "cohort.parquet").exists()  # ... but no cohort a later stage could take


def test_sample_ids_beside_patient_labels_get_a_note_naming_the_fix_without_an_id(tmp_path):
    """Genomics named by TCGA sample barcode, labels by patient, no patient_id_length: nothing links, and the
    report says why and what to write (the prefix length), naming no id; with the length written, all link."""
    patients = [f"TCGA-AB-{i:04d}" for i in range(6)]
    labels = pd.DataFrame({"patient_id": patients, "cancer_type": ["KIRC", "KIRP"] * 3})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    rows = "".join(f"{p}-01A-11R-A000-07\t{i}\n" for i, p in enumerate(patients[:5]))
    (tmp_path / "mrna.tsv").write_text("sample_id\tTP53\n" + rows + "TCGA-AB-00050\t9\n")  # no separator: no sample
    spec = {"name": "x", "labels": {"path": "labels.csv"}, "genomics": {"expression": {"path": "mrna.tsv"}}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec))
    cohort = build_cohort(load_dataset(tmp_path / "d.yaml"))
    assert cohort.report["patients"]["labelled"] == 0
    hints = [i for i in cohort.report["issues"] if i.startswith("ids: ")]
    assert len(hints) == 1 and "5 patient(s)" in hints[0] and "genomics.patient_id_length: 12" in hints[0]
    assert "TCGA-AB" not in hints[0]
    from typer.testing import CliRunner

    from clinicmm.cli import app

    shown = CliRunner().invoke(app, ["ingest", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "out")])
    assert shown.exit_code == 0 and "genomics.patient_id_length: 12" in " ".join(shown.output.split())
    spec["genomics"]["patient_id_length"] = 12
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec))
    cohort = build_cohort(load_dataset(tmp_path / "d.yaml"))
    assert cohort.report["patients"]["labelled"] == 6  # the length takes the first 12 characters, whatever follows
    assert not [i for i in cohort.report["issues"] if i.startswith("ids: ")]


def test_a_cbioportal_clinical_file_is_read_below_its_comment_lines(tmp_path):
    """cBioPortal's data_clinical_patient.txt has four '#' lines above its header: they are skipped and said; a
    labels file whose header is missing the named column still fails naming the column."""
    text = (
        "#Patient Identifier\tCancer Type\n#Identifier to uniquely specify a patient.\tType\n#STRING\tSTRING\n#1\t1\n"
        "PATIENT_ID\tCANCER_TYPE_ACRONYM\nTCGA-AB-0001\tKIRC\nTCGA-AB-0002\tKIRP\n"
    )
    (tmp_path / "data_clinical_patient.txt").write_text(text)
    (tmp_path / "mrna.tsv").write_text("sample_id\tTP53\nTCGA-AB-0001\t1\nTCGA-AB-0002\t2\n")
    labels = {
        "path": "data_clinical_patient.txt",
        "patient_column": "PATIENT_ID",
        "label_column": "CANCER_TYPE_ACRONYM",
    }
    spec = {"name": "x", "labels": labels, "genomics": {"expression": {"path": "mrna.tsv"}}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec))
    cohort = build_cohort(load_dataset(tmp_path / "d.yaml"), split=False)
    assert cohort.report["patients"]["labelled"] == 2
    assert dict(zip(cohort.manifest["patient_id"], cohort.manifest["label"], strict=True)) == {
        "TCGA-AB-0001": "KIRC", "TCGA-AB-0002": "KIRP"}  # fmt: skip
    assert any("first 4 line(s) begin with '#'" in note for note in cohort.report["issues"])
    labels["patient_column"] = "bcr_patient_barcode"
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError, match="bcr_patient_barcode"):
        build_cohort(load_dataset(tmp_path / "d.yaml"), split=False)
