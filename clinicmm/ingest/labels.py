"""The labels file: read once per ingest as a table of strings, then patient -> label with every bad row recorded."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clinicmm.config import DatasetSpec
from clinicmm.errors import InputError, where
from clinicmm.keys import Col


def read_labels_table(spec: DatasetSpec, table: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """The labels file as a table of strings (None without ``labels``); ``table`` itself when a caller already read it.

    Read once per ingest and handed to every step that needs one of its columns -- the labels, the label dates of
    ``notes.window``, the sites, the note-date leakage check -- rather than each reading the file again; each of
    them reads it through here when called on its own.
    """
    if table is not None or spec.labels is None:
        return table
    path = spec.resolve(spec.labels.path)
    table = read_table(path)
    if spec.labels.patient_column not in table.columns and str(table.columns[0]).startswith("#"):
        # cBioPortal's clinical files put four '#' lines (display names, descriptions, types, priorities) above
        # the header, as MAFs put their version line
        from clinicmm.ingest.tables import comment_lines

        skip = comment_lines(path)
        if skip:
            table = read_table(path, skip)
            table.attrs["issues"] = [f"{path.name}: its first {skip} line(s) begin with '#' (column descriptions, "
                                     "as cBioPortal writes them): skipped, the header read below them",
                                     *table.attrs["issues"]]  # fmt: skip
    return table


def read_labels(spec: DatasetSpec, table: pd.DataFrame | None = None) -> tuple[dict[str, str], list[dict]]:
    """patient -> label, and the skipped rows (empty patient id or label, duplicates).

    ``table``: the labels file already read (:func:`read_labels_table`); read here when not given.
    """
    if spec.labels is None:
        return {}, []
    path = spec.resolve(spec.labels.path)
    table = read_labels_table(spec, table)
    for key, col in (
        ("labels.patient_column", spec.labels.patient_column),
        ("labels.label_column", spec.labels.label_column),
    ):
        if col not in table.columns:
            raise InputError(
                f"{where(path, column=col)} not found (named by {key} in the dataset YAML); "
                f"columns in the file: {', '.join(table.columns)}. Fix the YAML or the header."
            )
    labels: dict[str, str] = {}
    skipped = []
    quarantined = table.attrs.get("quarantined", {})
    for i, (pid, label) in enumerate(zip(table[spec.labels.patient_column], table[spec.labels.label_column]), start=1):
        pid, label = str(pid).strip(), str(label).strip()
        reason = None
        if i in quarantined:
            reason = quarantined[i]
        elif not pid:
            reason = "empty patient id"
        elif not label:
            reason = f"empty label for patient in column {spec.labels.label_column!r}; fill it or remove the row"
        elif pid in labels and labels[pid] != label:
            reason = f"patient listed again with another label ({labels[pid]!r} first); kept the first"
        if reason:
            skipped.append(skip_row("labels", path, i, pid, reason))
        elif pid not in labels:
            labels[pid] = label
    return labels, skipped


def read_table(path: Path, skip: int = 0) -> pd.DataFrame:
    """A CSV, TSV or parquet table as strings; an unreadable file is an InputError naming it.

    Row by row (``ingest.tables``): a malformed row is quarantined -- left empty, its reason in
    ``attrs["quarantined"]`` (row number -> reason) -- and the other rows load; ``attrs["issues"]`` says how the
    file was decoded when that was not plain UTF-8. A path that is no regular file (a pipe) is never opened.
    ``skip``: lines above the header to leave out.
    """
    from clinicmm.ingest.tables import ISSUES, QUARANTINED, decode_text, parse_delimited
    from clinicmm.ingest.walk import special_reason

    if reason := special_reason(path):
        raise InputError(f"{path}: {reason}")
    try:
        if path.suffix == ".parquet":
            table = pd.read_parquet(path).astype(str)
            table.attrs.update({QUARANTINED: {}, ISSUES: []})
            return table
        sep = "," if path.suffix == ".csv" else "\t"
        try:  # a well-formed UTF-8 table: read as it always was
            table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skiprows=skip)
            table.attrs.update({QUARANTINED: {}, ISSUES: []})
            return table
        except (UnicodeDecodeError, pd.errors.ParserError):  # a few bad bytes or a ragged row: row by row
            decoded = decode_text(path.read_bytes(), "auto", str(path))
            text = "".join(decoded.text.splitlines(keepends=True)[skip:]) if skip else decoded.text
            table = parse_delimited(text, sep, path.name)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read the table ({exc}). Check the file format and separator.") from exc
    if issue := decoded.issue(path.name):
        table.attrs[ISSUES] = [issue, *table.attrs[ISSUES]]
    return table


def table_issues(table: pd.DataFrame | None) -> list[str]:
    """The file-level notes :func:`read_table` left on a labels table (decoding, short rows)."""
    return list(table.attrs.get("issues", [])) if table is not None else []


def skip_row(modality: str, source: object, row: object, patient: object, reason: str) -> dict:
    """One row of the ingest report's skipped inputs."""
    return {
        "modality": modality,
        "source": str(source),
        "row": row,
        Col.PATIENT.value: str(patient or ""),
        "reason": reason,
    }
