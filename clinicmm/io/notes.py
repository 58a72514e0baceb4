"""Read a clinical-notes table (csv, tsv, jsonl, parquet) into the notes index: one row per note.

Every cell is read as a string so identifiers such as ``0012`` keep their leading zeros. A note that cannot be
used (empty text, no patient id, a repeated note id) stays in the index with ``status = skipped`` and a reason
that names the file and row, so the run report can list it; it never stops the other notes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from clinicmm.config import NotesSpec
from clinicmm.errors import InputError
from clinicmm.keys import Col, Status

SUPPORTED = (".csv", ".tsv", ".jsonl", ".parquet")
COLUMNS = [Col.PATIENT, Col.NOTE_ID, Col.NOTE_TYPE, Col.TEXT, Col.SOURCE, Col.ROW, Col.STATUS, Col.REASON]


def read_notes(spec: NotesSpec, path: Path) -> pd.DataFrame:
    """The notes index of ``path`` (already resolved): the columns of :data:`COLUMNS`, one row per data row.

    ``note_id`` comes from ``spec.note_id_column`` or, without one (or where it is empty), ``<file>-<row>``;
    ``note_type`` is ``''`` without ``spec.note_type_column``; ``row`` is the 1-based data row (header excluded).
    """
    raw = _read_raw(Path(path))
    _require_columns(raw, spec, Path(path))
    rows = pd.RangeIndex(1, len(raw) + 1)
    out = pd.DataFrame(
        {
            Col.PATIENT: raw[spec.patient_column].str.strip().to_numpy(),
            Col.NOTE_ID: _note_ids(raw, spec, Path(path)),
            Col.NOTE_TYPE: raw[spec.note_type_column].str.strip().to_numpy() if spec.note_type_column else "",
            Col.TEXT: raw[spec.text_column].to_numpy(),
            Col.SOURCE: str(path),
            Col.ROW: rows.to_numpy(),
        }
    )
    out[Col.STATUS], out[Col.REASON] = _check(out, Path(path).name)
    out = out[COLUMNS].astype({Col.ROW: "int64"})
    out.columns = [str(c) for c in out.columns]  # plain str names, not the enum members
    return out


def _read_raw(path: Path) -> pd.DataFrame:
    """All columns as strings (missing → ''), whatever the format."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        raise InputError(
            f"{path}: unsupported notes format {suffix or '(no suffix)'!r}; "
            f"save the notes as one of {', '.join(SUPPORTED)}."
        )
    try:
        if suffix in (".csv", ".tsv"):
            return _read_delimited(path, "," if suffix == ".csv" else "\t")
        if suffix == ".jsonl":
            return _read_jsonl(path)
        return _as_strings(pd.read_parquet(path))
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not valid UTF-8 text (bad byte at offset {exc.start}); tried encoding utf-8. "
            "Re-save the file as UTF-8."
        ) from None
    except InputError:
        raise
    except (ValueError, OSError) as exc:  # pandas parser errors, pyarrow errors, empty files
        raise InputError(f"{path}: cannot be read as {suffix[1:]} ({exc}). Check the file's format.") from None


def _read_delimited(path: Path, sep: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty; it needs a header row and one row per note.") from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; blank lines are ignored (they are not data rows)."""
    records = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                message = f"{path}, line {number}: not valid JSON ({exc.msg}). Fix or remove the line."
                raise InputError(message) from None
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise InputError(f"{path}, line {number}: expected a JSON object per line, got {kind}.")
            records.append(record)
    return _as_strings(pd.DataFrame.from_records(records))


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as ``str``; missing values (None, NaN) become ''."""
    frame.columns = [str(c) for c in frame.columns]
    return frame.apply(lambda col: col.map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v)))


def _require_columns(raw: pd.DataFrame, spec: NotesSpec, path: Path) -> None:
    wanted = {
        "notes.patient_column": spec.patient_column,
        "notes.text_column": spec.text_column,
        "notes.note_id_column": spec.note_id_column,
        "notes.note_type_column": spec.note_type_column,
    }
    for key, column in wanted.items():
        if column is not None and column not in raw.columns:
            raise InputError(
                f"{path}: no column {column!r} (named by {key} in dataset.yaml); the file has columns "
                f"{', '.join(map(repr, raw.columns)) or '(none)'}. Rename the column or set {key}."
            )


def _note_ids(raw: pd.DataFrame, spec: NotesSpec, path: Path) -> list[str]:
    fallback = [f"{path.name}-{row}" for row in range(1, len(raw) + 1)]
    if not spec.note_id_column:
        return fallback
    given = raw[spec.note_id_column].str.strip()
    return [value or default for value, default in zip(given, fallback, strict=True)]


def _check(index: pd.DataFrame, name: str) -> tuple[list[str], list[str]]:
    """Status and reason of each note: empty patient id, empty text, or a note id already used above."""
    statuses, reasons, first_row = [], [], {}
    for patient, note_id, text, row in zip(
        index[Col.PATIENT], index[Col.NOTE_ID], index[Col.TEXT], index[Col.ROW], strict=True
    ):
        where = f"{name} row {row}"
        if not patient:
            reason = f"empty patient id in {where}; fill it or remove the row"
        elif not text.strip():
            reason = f"empty note text in {where}; fill it or remove the row"
        elif note_id in first_row:
            reason = f"note id in {where} repeats row {first_row[note_id]}; kept the first, give each note its own id"
        else:
            reason = ""
            first_row[note_id] = row
        statuses.append(Status.SKIPPED.value if reason else Status.OK.value)
        reasons.append(reason)
    return statuses, reasons
