"""Leakage checks that fail the run: anything that lets test patients' answers reach training.

Run on a split cohort (end of ingest). Each check returns :class:`Leak` records naming the file, row or column
at fault; :func:`check_leakage` raises one ``StageError`` listing them, with how to fix each kind. Checks:

- ``patient``: one patient in two splits (the same id twice, or ids that differ only in case or punctuation);
- ``image``: one image in two splits (the same SOPInstanceUID or SeriesInstanceUID, or the same pixel data);
- ``note``: one note text (case and whitespace normalised, at least ``MIN_NOTE_WORDS`` words) in two splits;
- ``label_column``: a genomics column that names the label (a deterministic function of the cancer type);
- ``note_date``: a note dated after the patient's label date (needs ``notes.date_column`` and
  ``labels.date_column``).
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from clinicmm.config import DatasetSpec
from clinicmm.errors import StageError
from clinicmm.keys import Col, Status

MAX_LISTED = 10
MIN_NOTE_WORDS = 20  # shorter notes ("Seen in clinic, no change.") are boilerplate, not one patient's document
PROGRESS_MIN_SERIES = 200  # a progress bar from this many series on (every slice's pixel data is read)
FIXES = {
    "patient": "give each patient one id, or merge the rows, so the patient lands in one split",
    "image": "remove the duplicate series (or fix its PatientID) so one image belongs to one patient",
    "note": "remove the duplicated note, or fix its patient id",
    "label_column": "remove the column from the genomics table: it encodes the answer",
    "note_date": "set notes.window (until_days_before: 0) to keep only notes up to the label date, or fix the dates",
}


@dataclass(frozen=True)
class Leak:
    check: str  # one of FIXES
    detail: str  # what and where (file, row, column, tag)


def split_of_patients(cohort) -> dict[str, str]:
    """Patient -> split, for the labelled usable patients that are in a split."""
    m = cohort.manifest
    m = m[(m[Col.STATUS] == Status.OK) & (m[Col.SPLIT] != "")]
    return dict(zip(m[Col.PATIENT].astype(str), m[Col.SPLIT].astype(str)))


def _across(groups: dict[str, list[tuple[str, str]]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Groups (key -> [(split, where)]) whose members sit in more than one split."""
    return [(k, v) for k, v in groups.items() if len({s for s, _ in v}) > 1]


def _listing(members: list[tuple[str, str]]) -> str:
    return "; ".join(f"{where} ({split})" for split, where in members[:4]) + (" ..." if len(members) > 4 else "")


# -------------------------------------------------------------------------------------------- patients


def normal_id(pid: str) -> str:
    return re.sub(r"[^0-9a-z]", "", pid.casefold())


def patient_leaks(cohort) -> list[Leak]:
    """The same patient (id equal up to case and punctuation) in two splits."""
    m = cohort.manifest
    m = m[(m[Col.STATUS] == Status.OK) & (m[Col.SPLIT] != "")]
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pid, split in zip(m[Col.PATIENT].astype(str), m[Col.SPLIT].astype(str)):
        groups[normal_id(pid)].append((split, f"patient {pid!r}"))
    return [
        Leak("patient", f"{_listing(v)} are one patient in {len({s for s, _ in v})} splits") for _, v in _across(groups)
    ]


# ---------------------------------------------------------------------------------------------- images


def pixel_digest(files: list[str]) -> str:
    """sha256 over the slices' raw pixel bytes, in order, of one series (the SOPInstanceUIDs come from the index)."""
    import pydicom

    pixels = hashlib.sha256()
    for f in files:
        ds = pydicom.dcmread(f, specific_tags=["PixelData"])
        pixels.update(hashlib.sha256(bytes(ds.get("PixelData", b"") or b"")).digest())
    return pixels.hexdigest()


def image_leaks(cohort, split_of: dict[str, str]) -> list[Leak]:
    """Series of patients in different splits that share a SeriesInstanceUID, a SOPInstanceUID or their pixel
    data; one leak per group of such series, saying what they share.

    The UIDs are the ones the DICOM index read from the headers (``series_uid``, ``sop_uids``); only the pixel
    data is read here.
    """
    series = cohort.series
    if series is None or series.empty:
        return []
    ok = series[(series[Col.STATUS] == Status.OK) & series[Col.PATIENT].isin(split_of)]
    by_key: dict[str, list[tuple[str, str]]] = defaultdict(list)
    rows = zip(ok[Col.PATIENT], ok[Col.SERIES_UID], ok[Col.SERIES_DIR], ok[Col.FILES], ok[Col.SOP_UID])
    quiet = True if len(ok) < PROGRESS_MIN_SERIES else None
    for pid, uid, folder, files, sops in tqdm(
        rows, total=len(ok), desc="Leakage check: image hashes", unit="series", file=sys.stderr, disable=quiet
    ):
        member = (split_of[pid], f"series in {folder}")
        try:
            pixels = pixel_digest([str(f) for f in files])
        except Exception:  # noqa: BLE001 -- an unreadable series fails later, in encode, with its own reason
            pixels = ""
        keys = [f"SeriesInstanceUID {uid}", *([f"pixel data (sha256 {pixels[:16]})"] if pixels else [])]
        for key in keys + [f"SOPInstanceUID {sop}" for sop in sops if sop]:
            by_key[key].append(member)
    shared: dict[tuple, list[str]] = defaultdict(list)  # the series involved -> what they share
    for key, members in _across(by_key):
        shared[tuple(sorted(set(members)))].append(key)
    return [Leak("image", f"{_listing(list(members))} share {_shared_text(keys)}") for members, keys in shared.items()]


def _shared_text(keys: list[str]) -> str:
    sops = [k for k in keys if k.startswith("SOPInstanceUID")]
    other = [k for k in keys if not k.startswith("SOPInstanceUID")]
    if sops:
        other.append(f"{len(sops)} SOPInstanceUID(s) ({sops[0].split()[1]}{' ...' if len(sops) > 1 else ''})")
    return ", ".join(other)


# ----------------------------------------------------------------------------------------------- notes


def normal_text(text: str) -> str:
    """A note's text for duplicate detection: case folded, whitespace collapsed."""
    return " ".join(str(text).casefold().split())


def note_leaks(cohort, split_of: dict[str, str]) -> list[Leak]:
    """The same note text (normalised) in notes of patients in different splits."""
    notes = cohort.notes
    if notes is None or notes.empty:
        return []
    ok = notes[(notes[Col.STATUS] == Status.OK) & notes[Col.PATIENT].isin(split_of)]
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for pid, text, source, row in zip(ok[Col.PATIENT], ok[Col.TEXT], ok[Col.SOURCE], ok[Col.ROW]):
        text = normal_text(text)
        if len(text.split()) < MIN_NOTE_WORDS:
            continue
        key = hashlib.sha256(text.encode()).hexdigest()
        groups[key].append((split_of[pid], f"{Path(str(source)).name} row {row}"))
    return [Leak("note", f"the same note text is in {_listing(v)}") for _, v in _across(groups)]


# -------------------------------------------------------------------------------------- label columns


def label_column_leaks(cohort, spec: DatasetSpec, split_of: dict[str, str]) -> list[Leak]:
    """Genomics columns that are a deterministic function of the label (constant within every label, not
    constant overall), or that carry the label column's name."""
    expr = cohort.expression
    if expr is None or expr.empty:
        return []
    labels = cohort.manifest.set_index(Col.PATIENT.value)[Col.LABEL.value]
    rows = [p for p in expr.index if p in split_of]
    if len(rows) < 4:
        return []
    frame, y = expr.loc[rows], labels.loc[rows].to_numpy()
    groups = frame.groupby(y)
    counted = groups.count() >= 2  # labels with at least two values in this column
    constant = (groups.nunique() <= 1) | ~counted
    derived = constant.all() & (counted.sum() >= 2) & (frame.nunique() >= 2)
    label_name = spec.labels.label_column.casefold() if spec.labels else "label"
    named = pd.Series([str(c).casefold() in (label_name, "label") for c in frame.columns], index=frame.columns)
    source = (
        spec.resolve(spec.genomics.expression.path).name if spec.genomics and spec.genomics.expression else "expression"
    )
    leaks = []
    for column in frame.columns[(derived | named).to_numpy()]:
        why = (
            "carries the label column's name"
            if named[column]
            else "is constant within every label (a function of the cancer type)"
        )
        leaks.append(Leak("label_column", f"{source}, column {str(column)!r} {why}"))
    return leaks


# ------------------------------------------------------------------------------------------ note dates


def note_date_leaks(
    cohort, spec: DatasetSpec, split_of: dict[str, str], labels_table: pd.DataFrame | None = None
) -> list[Leak]:
    """Notes dated after their patient's label date (only when both date columns are configured).

    Notes that ``notes.window`` already left out are skipped rows and do not count. ``labels_table``: the labels
    file as ingest read it (``labels.read_labels_table``); read here when not given.
    """
    if not (spec.notes and spec.labels and spec.notes.date_column and spec.labels.date_column):
        return []
    notes = cohort.notes
    if notes is None or notes.empty:
        return []
    from clinicmm.ingest.labels import read_labels_table

    table = read_labels_table(spec, labels_table)
    label_date = dict(zip(table[spec.labels.patient_column].str.strip(), _dates(table[spec.labels.date_column])))
    ok = notes[(notes[Col.STATUS] == Status.OK) & notes[Col.PATIENT].isin(split_of)]
    written = _dates(ok[Col.NOTE_DATE])
    leaks = []
    for pid, source, row, date in zip(ok[Col.PATIENT], ok[Col.SOURCE], ok[Col.ROW], written):
        known = label_date.get(pid, pd.NaT)
        if pd.notna(date) and pd.notna(known) and date > known:
            leaks.append(
                Leak(
                    "note_date",
                    f"{Path(str(source)).name} row {row}: note dated {date.date()} after the "
                    f"label date {known.date()} ({spec.resolve(spec.labels.path).name}, column {spec.labels.date_column!r})",
                )
            )
    return leaks


def _dates(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column.astype(str).str.strip(), errors="coerce", format="mixed").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------- API


def find_leaks(cohort, spec: DatasetSpec, labels_table: pd.DataFrame | None = None) -> list[Leak]:
    """Every leak in a split cohort (empty: clean). ``labels_table``: the labels file already read, if it was."""
    split_of = split_of_patients(cohort)
    return [
        *patient_leaks(cohort),
        *image_leaks(cohort, split_of),
        *note_leaks(cohort, split_of),
        *label_column_leaks(cohort, spec, split_of),
        *note_date_leaks(cohort, spec, split_of, labels_table),
    ]


def check_leakage(cohort, spec: DatasetSpec, labels_table: pd.DataFrame | None = None) -> dict[str, int]:
    """Raise ``StageError`` listing every leak; else return the checks run (name -> 0 leaks) for the report."""
    leaks = find_leaks(cohort, spec, labels_table)
    if leaks:
        raise StageError(render(leaks, f"dataset {spec.name!r}"))
    return dict.fromkeys(FIXES, 0)


def render(leaks: list[Leak], what: str, between: str = "splits") -> str:
    """One message: the count per check, the first leaks with where they are, and how to fix each kind."""
    counts = pd.Series([lk.check for lk in leaks]).value_counts()
    head = ", ".join(f"{n} {check}" for check, n in counts.items())
    lines = [f"{what}: leakage between {between} ({head}); the run stops so no result is inflated by it."]
    lines += [f"- {lk.check}: {lk.detail}" for lk in leaks[:MAX_LISTED]]
    if len(leaks) > MAX_LISTED:
        lines.append(f"- ... and {len(leaks) - MAX_LISTED} more")
    lines += [f"fix ({check}): {FIXES[check]}" for check in counts.index]
    return "\n".join(lines)
