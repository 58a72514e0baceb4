"""Tests of clinicmm.io.notes.read_notes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clinicmm.config import NotesSpec
from clinicmm.errors import InputError
from clinicmm.io.notes import COLUMNS, read_notes

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


def test_undecodable_bytes_name_file_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "notes.csv"
    path.write_bytes("patient_id,text\nP1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"notes\.csv.*utf-8"):
        read_notes(NotesSpec(path=path), path)


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"patient_id": "P1", "text": "ok"}\n{not json\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"notes\.jsonl, line 2"):
        read_notes(NotesSpec(path=path), path)
