"""Tests of clinicmm.ingest.notes.read_notes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clinicmm.config import NotesSpec
from clinicmm.errors import InputError
from clinicmm.ingest.notes import COLUMNS, read_notes

ROWS = [
    {"pid": "0012", "body": "CT shows a mass in the right upper lobe.", "nid": "n1", "kind": "radiology"},
    {"pid": "0013", "body": "Biopsy: papillary carcinoma, renal cortex.", "nid": "n2", "kind": "pathology"},
    {"pid": "0012", "body": "   ", "nid": "n3", "kind": "radiology"},
    {"pid": "", "body": "Orphan note.", "nid": "n4", "kind": "other"},
]
SPEC = dict(patient_column="pid", text_column="body", note_id_column="nid", note_type_column="kind")


def _write(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        frame.to_parquet(path)
    return path


def _read(path: Path, **spec: str | None) -> pd.DataFrame:
    return read_notes(NotesSpec(path=path, **{**SPEC, **spec}), path)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_gives_the_same_rows(tmp_path: Path, suffix: str) -> None:
    notes = _read(_write(tmp_path / f"notes{suffix}", ROWS))
    assert list(notes.columns) == [str(c) for c in COLUMNS]
    assert notes["note_date"].tolist() == ["", "", "", ""]
    assert notes["patient_id"].tolist() == ["0012", "0013", "0012", ""]
    assert notes["note_id"].tolist() == ["n1", "n2", "n3", "n4"]
    assert notes["note_type"].tolist() == ["radiology", "pathology", "radiology", "other"]
    assert notes["text"].iloc[1] == ROWS[1]["body"]
    assert notes["row"].tolist() == [1, 2, 3, 4]
    assert notes["status"].tolist() == ["ok", "ok", "skipped", "skipped"]
    assert set(notes["source"]) == {str(tmp_path / f"notes{suffix}")}


def test_missing_column_names_column_file_and_yaml_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "notes.csv", ROWS)
    with pytest.raises(InputError) as err:
        _read(path, text_column="note_text")
    message = str(err.value)
    assert "'note_text'" in message and "notes.csv" in message and "notes.text_column" in message
    assert "'body'" in message  # the columns that do exist


def test_empty_text_and_patient_are_skipped_with_row_and_reason(tmp_path: Path) -> None:
    notes = _read(_write(tmp_path / "notes.csv", ROWS))
    assert notes.loc[2, "reason"] == "empty note text in notes.csv row 3; fill it or remove the row"
    assert "empty patient id in notes.csv row 4" in notes.loc[3, "reason"]
    assert (notes.loc[:1, "reason"] == "").all()


def test_leading_zero_ids_and_numeric_looking_text_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text("patient_id,text\n0012,42\n007,NA\n", encoding="utf-8")
    notes = read_notes(NotesSpec(path=path), path)
    assert notes["patient_id"].tolist() == ["0012", "007"]
    assert notes["text"].tolist() == ["42", "NA"]
    assert notes["note_id"].tolist() == ["notes.csv-1", "notes.csv-2"]  # no note id column: <file>-<row>
    assert notes["note_type"].tolist() == ["", ""]


def test_multiline_quoted_note_is_one_row(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_text('patient_id,text\nP1,"line one\nline two"\nP2,second\n', encoding="utf-8")
    notes = read_notes(NotesSpec(path=path), path)
    assert notes["text"].tolist() == ["line one\nline two", "second"]
    assert notes["row"].tolist() == [1, 2]


def test_repeated_note_id_keeps_the_first(tmp_path: Path) -> None:
    rows = [{"pid": "A", "body": "x", "nid": "n1", "kind": ""}, {"pid": "B", "body": "y", "nid": "n1", "kind": ""}]
    notes = _read(_write(tmp_path / "notes.csv", rows))
    assert notes["status"].tolist() == ["ok", "skipped"]
    assert "repeats row 1" in notes.loc[1, "reason"]


def test_unsupported_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "notes.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match=r"\.csv, \.tsv, \.jsonl, \.parquet"):
        read_notes(NotesSpec(path=path), path)


GERMAN = (  # written for this test: pathology-style German, as a Windows (cp1252) export
    'P1,"Befund: Plattenepithelkarzinom der Lunge, Größe 2 cm, überwiegend solide."\n'
    'P2,"Histologie: mäßig differenziertes Adenokarzinom; Resektionsränder frei. Keine Lymphknotenmetastasen."\n'
    'P3,"Diagnose: papilläres Schilddrüsenkarzinom, Tumorgröße 1,2 cm."\n'
)


def test_non_utf8_table_is_detected_and_noted(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_bytes(("patient_id,text\n" + GERMAN).encode("cp1252"))
    notes = read_notes(NotesSpec(path=path), path)
    assert "Größe" in notes["text"].iloc[0] and "überwiegend" in notes["text"].iloc[0]
    assert any("notes.csv" in i and "not UTF-8" in i for i in notes.attrs["issues"])


def test_explicit_encoding_is_used_or_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_bytes("patient_id,text\nP1,café\n".encode("latin-1"))
    assert read_notes(NotesSpec(path=path, encoding="latin-1"), path)["text"].tolist() == ["café"]
    with pytest.raises(InputError, match=r"notes\.csv.*utf-8.*notes\.encoding"):
        read_notes(NotesSpec(path=path, encoding="utf-8"), path)


def test_bad_jsonl_line_is_named_and_the_rest_loads(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"patient_id": "P1", "text": "ok"}\n{not json\n', encoding="utf-8")
    index = read_notes(NotesSpec(path=path), path).set_index("row")
    assert index.loc[1, "status"] == "ok"
    assert (
        index.loc[2, "status"] == "skipped" and "notes.jsonl, row 2 (line 2): not valid JSON" in index.loc[2, "reason"]
    )


# ------------------------------------------------------------------- dates, types, folders and the window

DATED = [
    {"pid": "P1", "body": "FINAL DIAGNOSIS: adenocarcinoma.", "nid": "a", "kind": "Pathology", "day": "2021-03-02"},
    {"pid": "P1", "body": "CT chest: mass.", "nid": "b", "kind": "radiology", "day": "2021-02-20"},
    {"pid": "P1", "body": "Follow-up after lobectomy.", "nid": "c", "kind": "consult", "day": "2021-05-01"},
    {"pid": "P2", "body": "Old note.", "nid": "d", "kind": "radiology", "day": "2019-01-01"},
    {"pid": "P2", "body": "Biopsy.", "nid": "e", "kind": "pathology", "day": "31/02/2021"},
]


def test_dates_are_normalised_and_a_bad_date_is_skipped_with_file_row_and_fix(tmp_path: Path) -> None:
    notes = _read(_write(tmp_path / "notes.tsv", DATED), date_column="day")
    assert notes["note_date"].tolist()[:4] == ["2021-03-02", "2021-02-20", "2021-05-01", "2019-01-01"]
    assert notes["status"].tolist() == ["ok"] * 4 + ["skipped"]
    assert "'31/02/2021' in notes.tsv row 5 is not a date" in notes.loc[4, "reason"]
    assert "notes.date_format" in notes.loc[4, "reason"]


def test_date_format_reads_local_dates(tmp_path: Path) -> None:
    rows = [{**DATED[0], "day": "02/03/2021"}]
    notes = _read(_write(tmp_path / "notes.csv", rows), date_column="day", date_format="%d/%m/%Y")
    assert notes["note_date"].tolist() == ["2021-03-02"]


def test_note_types_choose_which_notes_count(tmp_path: Path) -> None:
    notes = _read(_write(tmp_path / "notes.jsonl", DATED[:4]), note_types=["pathology", "Radiology"])
    assert notes["status"].tolist() == ["ok", "ok", "skipped", "ok"]
    assert "note type 'consult' in notes.jsonl row 3 is not one of notes.note_types" in notes.loc[2, "reason"]


def test_missing_date_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"'written'.*notes\.date_column"):
        _read(_write(tmp_path / "notes.parquet", DATED), date_column="written")


def test_per_patient_folders_of_text_files(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    (root / "0012").mkdir(parents=True)
    (root / "0013").mkdir()
    (root / "0012" / "2021-03-02_pathology.txt").write_text("FINAL DIAGNOSIS: Squamous cell carcinoma.\n", "utf-8")
    (root / "0012" / "2021-02-20_radiology.txt").write_bytes(GERMAN.encode("cp1252"))
    (root / "0013" / "2021-01-05_pathology.txt").write_text("   ", "utf-8")
    (root / "0013" / "readme.md").write_text("not a note", "utf-8")
    spec = NotesSpec(path=root, file_name_pattern=r"(?P<date>\d{4}-\d{2}-\d{2})_(?P<type>\w+)")
    notes = read_notes(spec, root)
    assert notes["patient_id"].tolist() == ["0012", "0012", "0013"]
    assert notes["note_id"].tolist() == [
        "0012/2021-02-20_radiology.txt",
        "0012/2021-03-02_pathology.txt",
        "0013/2021-01-05_pathology.txt",
    ]
    assert notes["note_type"].tolist() == ["radiology", "pathology", "pathology"]
    assert notes["note_date"].tolist() == ["2021-02-20", "2021-03-02", "2021-01-05"]
    assert "Größe" in notes["text"].iloc[0]
    assert notes["status"].tolist() == ["ok", "ok", "skipped"]
    assert "empty note text" in notes.loc[2, "reason"] and "2021-01-05_pathology.txt" in notes.loc[2, "reason"]
    assert notes["row"].isna().all()
    assert any("not UTF-8" in issue for issue in notes.attrs["issues"])


def test_unreadable_file_in_a_folder_is_skipped_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "P1").mkdir()
    (tmp_path / "P1" / "a.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "P1" / "b.txt").write_text("fine", "utf-8")
    notes = read_notes(NotesSpec(path=tmp_path, encoding="utf-8"), tmp_path)
    assert notes["status"].tolist() == ["skipped", "ok"]
    assert "a.txt" in notes.loc[0, "reason"] and "cannot be read as utf-8" in notes.loc[0, "reason"]
    with pytest.raises(InputError, match=r"no note files matching '\*\.text'"):
        read_notes(NotesSpec(path=tmp_path, file_glob="*.text"), tmp_path)


def _dataset(tmp_path: Path, window: str, label_rows: str) -> Path:
    _write(tmp_path / "notes.csv", DATED[:4])
    (tmp_path / "labels.csv").write_text("patient_id,cancer_type,diagnosed\n" + label_rows, encoding="utf-8")
    (tmp_path / "dataset.yaml").write_text(
        "name: t\nlabels: {path: labels.csv, date_column: diagnosed}\n"
        "notes: {path: notes.csv, patient_column: pid, text_column: body, note_id_column: nid, "
        f"note_type_column: kind, date_column: day, window: {window}}}\n",
        encoding="utf-8",
    )
    return tmp_path / "dataset.yaml"


def test_window_leaves_out_notes_after_the_label_date(tmp_path: Path) -> None:
    from clinicmm.config import load_dataset
    from clinicmm.ingest.cohort import build_cohort

    path = _dataset(tmp_path, "{days_before: 365}", "P1,LUAD,2021-03-02\nP2,LUSC,\n")
    cohort = build_cohort(load_dataset(path), split=False)
    notes = cohort.notes.set_index("note_id")
    assert notes["status"].to_dict() == {"a": "ok", "b": "ok", "c": "skipped", "d": "skipped"}
    assert "dated 2021-05-01 is -60 days before the label date 2021-03-02" in notes.loc["c", "reason"]
    assert "no label date (labels.csv row 2, column 'diagnosed')" in notes.loc["d", "reason"]
    reasons = [s["reason"] for s in cohort.report["skipped"] if s["modality"] == "note"]
    assert len(reasons) == 2  # recorded in the ingest report, not silently dropped
    # strictly before the label date, and at most 5 days before: only note b (10 days) is out, a (same day) too
    path = _dataset(tmp_path, "{days_before: 5, until_days_before: 1}", "P1,LUAD,2021-03-02\nP2,LUSC,2019-01-03\n")
    notes = build_cohort(load_dataset(path), split=False).notes.set_index("note_id")
    assert notes["status"].to_dict() == {"a": "skipped", "b": "skipped", "c": "skipped", "d": "ok"}


def test_window_needs_dates_in_the_config(tmp_path: Path) -> None:
    from clinicmm.config import load_dataset
    from clinicmm.errors import ConfigError

    path = _dataset(tmp_path, "{days_before: 5}", "P1,LUAD,2021-03-02\n")
    path.write_text(path.read_text().replace("date_column: diagnosed", "label_column: cancer_type"))
    with pytest.raises(ConfigError, match="labels.date_column"):
        load_dataset(path)
    with pytest.raises(ValueError, match="notes.date_column"):
        NotesSpec(path=path, window={"days_before": 3})
