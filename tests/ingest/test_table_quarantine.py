"""Row-level quarantine of the notes and labels tables, per-file decoding a few bad bytes cannot flip, and the
warnings ingest gives where data is suspect (NUL bytes, oversized notes, one class, too small a class)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from test_hostile_trees import tiny_dataset

from clinicmm.config import NotesSpec, load_dataset
from clinicmm.ingest import notes as notes_module
from clinicmm.ingest.cohort import build_cohort, ingest
from clinicmm.ingest.notes import read_notes
from clinicmm.ingest.tables import decode_text


def _yaml(path, **changes):
    cfg = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        cfg.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(cfg))
    return load_dataset(path)


def _skips(cohort, name):
    return [s for s in cohort.report["skipped"] if s["source"].endswith(name)]


def test_one_malformed_jsonl_line_is_quarantined_and_the_rest_of_the_notes_load(tmp_path):
    yaml_path = tiny_dataset(tmp_path)
    lines = [
        json.dumps({"patient_id": "P0", "text": "Pathology: carcinoma seen in the specimen."}),
        '{"patient_id": "P1", "text": "broken',  # not JSON
        "",
        '["P1", "a list, not an object"]',
        json.dumps({"patient_id": "P2", "text": "Radiology: mass \ud800 in the left lung."}),  # a lone surrogate
    ]
    (yaml_path.parent / "notes.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = _yaml(yaml_path, notes={"path": "notes.jsonl"})
    cohort = ingest(spec, tmp_path / "out")  # and the tables are written
    notes = cohort.notes.set_index("row")
    assert notes.loc[1, "status"] == "ok" and notes.loc[4, "status"] == "ok"
    assert "\ufffd" in notes.loc[4, "text"]
    bad = {s["row"]: s["reason"] for s in _skips(cohort, "notes.jsonl")}
    assert set(bad) == {2, 3}
    assert "line 2" in bad[2] and "not valid JSON" in bad[2] and "line 4" in bad[3] and "JSON object" in bad[3]
    assert "broken" not in json.dumps(cohort.report)  # the reason names the line, it does not echo it


def test_a_ragged_csv_row_is_quarantined_and_the_rest_of_the_table_loads(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text(
        "patient_id,text\nP0,first note\nP1,second,with a stray comma\nP2,third note\nP3\n", encoding="utf-8"
    )
    index = read_notes(NotesSpec(path=path), path).set_index("row")
    assert index.loc[1, "status"] == "ok" and index.loc[3, "status"] == "ok"
    assert index.loc[2, "status"] == "skipped"
    assert "row 2 (line 3): 3 fields where the header has 2" in index.loc[2, "reason"]
    assert index.loc[4, "status"] == "skipped" and "empty note text" in index.loc[4, "reason"]  # short row: padded
    assert any("row(s) 4 have fewer fields" in i for i in index.attrs["issues"])


def test_a_ragged_labels_row_is_quarantined_with_its_row_and_other_patients_keep_their_labels(tmp_path):
    yaml_path = tiny_dataset(tmp_path)
    (yaml_path.parent / "labels.csv").write_text(
        "patient_id,cancer_type\nP0,BRCA\nP1,LUAD,extra,cells\nP2,COAD\n", encoding="utf-8"
    )
    cohort = build_cohort(load_dataset(yaml_path))
    m = cohort.manifest.set_index("patient_id")
    assert m.loc["P0", "label"] == "BRCA" and m.loc["P2", "label"] == "COAD" and m.loc["P1", "label"] == ""
    skip = next(s for s in _skips(cohort, "labels.csv") if s["row"] == 2)
    assert "4 fields where the header has 2" in skip["reason"]


def test_a_few_bad_bytes_do_not_flip_the_encoding_of_a_whole_utf8_table(tmp_path):
    rows = [f'P{i},"Befund {i}: Größe {i} cm, mäßig differenziert, Resektionsränder frei."' for i in range(40)]
    data = ("patient_id,text\n" + "\n".join(rows) + "\n").encode("utf-8")
    data = data.replace(b"Befund 7", b"Befund \xff\xfe\x9d\x81\x8f\x90")  # six bad bytes in one row
    path = tmp_path / "notes.csv"
    path.write_bytes(data)
    index = read_notes(NotesSpec(path=path), path)
    assert (index["status"] == "ok").all()
    assert index["text"].str.contains("Größe").all()  # every row read as UTF-8, not as cp775
    assert "\ufffd" in index.set_index("row").loc[8, "text"]
    assert any("line(s) 9" in i and "U+FFFD" in i for i in index.attrs["issues"])
    # a file that is not UTF-8 as a whole is still detected
    assert decode_text("Größe, mäßig, überwiegend".encode("cp1252") * 5, "auto", "x").encoding != "utf-8"


def test_bad_bytes_in_the_labels_file_are_replaced_and_reported(tmp_path):
    yaml_path = tiny_dataset(tmp_path, patients=tuple(f"P{i}" for i in range(12)))
    labels = (yaml_path.parent / "labels.csv").read_bytes().replace(b"P4,", b"P4\xff,")
    (yaml_path.parent / "labels.csv").write_bytes(labels)
    cohort = build_cohort(load_dataset(yaml_path))
    m = cohort.manifest.set_index("patient_id")
    assert m.loc["P4", "label"] == "" and m.loc["P4\ufffd", "label"] == "LUAD"  # P4's id no longer matches ...
    assert all(m.loc[f"P{i}", "label"] for i in range(12) if i != 4)  # ... and every other patient links
    assert any("labels.csv: line(s) 6" in i for i in cohort.report["issues"])


def test_nul_bytes_are_removed_and_oversized_notes_cut_each_named_in_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(notes_module, "MAX_NOTE_CHARS", 50)
    path = tmp_path / "notes.csv"
    pd.DataFrame({"patient_id": ["P0", "P1", "P2"], "text": ["ok\x00 note", "x" * 80, "fine"]}).to_csv(
        path, index=False
    )
    index = read_notes(NotesSpec(path=path), path).set_index("row")
    assert index.loc[1, "text"] == "ok note" and len(index.loc[2, "text"]) == 50 and index.loc[3, "text"] == "fine"
    issues = " ".join(index.attrs["issues"])
    assert "NUL bytes removed from the note text of row 1" in issues
    assert "row 2 is longer than 50 characters" in issues and "xxxx" not in issues


def test_one_class_only_is_a_warning(tmp_path):
    yaml_path = tiny_dataset(tmp_path)
    (yaml_path.parent / "labels.csv").write_text("patient_id,cancer_type\nP0,BRCA\nP1,BRCA\nP2,BRCA\n")
    issues = build_cohort(load_dataset(yaml_path)).report["issues"]
    assert any("one class only ('BRCA'" in i for i in issues)


@pytest.mark.parametrize("mode", ["given", "random"])
def test_a_class_too_small_for_the_splits_is_named_without_patient_ids(tmp_path, mode):
    patients = tuple(f"P{i}" for i in range(7))
    yaml_path = tiny_dataset(tmp_path, patients=patients)
    labels = pd.DataFrame({"patient_id": patients, "cancer_type": ["BRCA"] * 3 + ["LUAD"] * 3 + ["COAD"]})
    labels["split"] = ["train", "val", "test"] * 2 + ["train"]
    labels.to_csv(yaml_path.parent / "labels.csv", index=False)
    spec = _yaml(yaml_path, split={"column": "split"}) if mode == "given" else load_dataset(yaml_path)
    issues = build_cohort(spec).report["issues"]
    small = [i for i in issues if "'COAD'" in i and "only 1" in i]
    assert small and not any("P6" in i for i in small)
