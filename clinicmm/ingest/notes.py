"""Read clinical notes into the notes index: one row per note, from a table or from per-patient folders.

Inputs:

* a table (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``), one row per note, with configurable patient, text,
  note id, note type and note date columns;
* a folder holding one folder per patient (named by the patient id) with one text file per note
  (``notes.file_glob``, default ``*.txt``); ``notes.file_name_pattern`` reads a note's type and date from its
  file name (named groups ``type`` and ``date``).

Text files and delimited tables are read as UTF-8 when they are valid UTF-8, else their encoding is detected
with charset-normalizer (``notes.encoding: auto``) and the file is named in the ingest report's notes; with
an explicit ``notes.encoding`` that encoding alone is used. Every cell is read as a string so identifiers such
as ``0012`` keep their leading zeros. A note that cannot be used (empty text, no patient id, a repeated note
id, a bad date, an unreadable file, a type or date that ``notes.note_types`` / ``notes.window`` leave out)
stays in the index with ``status = skipped`` and a reason that names the file and row, so the run report can
list it; it never stops the other notes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePath

import pandas as pd

from clinicmm.config import DatasetSpec, NotesSpec
from clinicmm.errors import InputError
from clinicmm.ingest.tables import ISSUES, QUARANTINED, decode_text, parse_delimited
from clinicmm.ingest.walk import FOLLOW_LINKS_OUTSIDE, printable, special_reason, walk
from clinicmm.keys import Col, Status

SUPPORTED = (".csv", ".tsv", ".jsonl", ".parquet")
MAX_NOTE_CHARS = 1_000_000  # a longer note is cut here (and named in the report): no report is a novel
COLUMNS = [
    Col.PATIENT,
    Col.NOTE_ID,
    Col.NOTE_TYPE,
    Col.NOTE_DATE,
    Col.TEXT,
    Col.SOURCE,
    Col.ROW,
    Col.STATUS,
    Col.REASON,
]


def read_notes(
    spec: NotesSpec, path: Path, roots: list[Path] | None = None, follow_outside: bool = FOLLOW_LINKS_OUTSIDE
) -> pd.DataFrame:
    """The notes index of ``path`` (already resolved): the columns of :data:`COLUMNS`, one row per note.

    ``note_id`` comes from ``spec.note_id_column`` or, without one (or where it is empty), ``<file>-<row>``
    (``<patient>/<file name>`` for folder input); ``note_type`` / ``note_date`` are ``''`` when not given;
    ``row`` is the 1-based data row (header excluded), empty for folder input. Decoding notes (a non-UTF-8
    file) are in ``index.attrs["issues"]``. ``roots``: the dataset's folders symbolic links may lead into
    (default: ``path``); ``follow_outside`` follows links out of them too. A malformed table row, a pipe, a link
    loop or a link leaving the roots is a skipped row with its reason; NUL bytes are removed from a note and a
    note longer than :data:`MAX_NOTE_CHARS` is cut there, each named in the issues.
    """
    path = Path(path)
    if path.is_dir():
        out, issues = _read_folder(spec, path, roots, follow_outside)
    else:
        out, issues = _read_table_notes(spec, path)
    out[Col.STATUS], out[Col.REASON] = _check(out, spec)
    out = out[COLUMNS].astype({Col.ROW: "Int64"})
    out.columns = [str(c) for c in out.columns]  # plain str names, not the enum members
    out.attrs["issues"] = issues
    return out


# ---------------------------------------------------------------------------------------------- decoding


def decode(data: bytes, encoding: str, where: str, lenient: bool = False) -> tuple[str, str]:
    """``(text, encoding used)`` of a note file's bytes: :func:`clinicmm.ingest.tables.decode_text` (the one
    decoder of tables and notes) with ``notes.encoding`` named in its messages."""
    decoded = decode_text(data, encoding, where, "notes.encoding", lenient)
    return decoded.text, decoded.encoding


# ------------------------------------------------------------------------------------------------ tables


def _read_table_notes(spec: NotesSpec, path: Path) -> tuple[pd.DataFrame, list[str]]:
    raw = _read_raw(path, spec.encoding)
    _require_columns(raw, spec, path)
    quarantined = raw.attrs.get(QUARANTINED, {})
    rows = pd.RangeIndex(1, len(raw) + 1)
    column = lambda name: raw[name].str.strip().to_numpy() if name else ""  # noqa: E731
    out = pd.DataFrame(
        {
            Col.PATIENT: raw[spec.patient_column].str.strip().to_numpy(),
            Col.NOTE_ID: _note_ids(raw, spec, path),
            Col.NOTE_TYPE: column(spec.note_type_column),
            Col.NOTE_DATE: column(spec.date_column),
            Col.TEXT: raw[spec.text_column].to_numpy(),
            Col.SOURCE: str(path),
            Col.ROW: rows.to_numpy(),
            "_error": [quarantined.get(r, "") for r in rows],
        }
    )
    texts, cleaning = clean_texts(out[Col.TEXT].tolist(), [f"row {r}" for r in rows])
    out[Col.TEXT] = texts
    issues = list(raw.attrs.get(ISSUES, [])) + [f"{path.name}: {c}" for c in cleaning]
    return out, issues


def clean_texts(texts: list[str], places: list[str]) -> tuple[list[str], list[str]]:
    """Texts without NUL bytes and cut at :data:`MAX_NOTE_CHARS`; report notes naming the rows (never the text)."""
    nul, long, out = [], [], []
    for text, place in zip(texts, places, strict=True):
        text = str(text)
        if "\x00" in text:
            text = text.replace("\x00", "")
            nul.append(place)
        if len(text) > MAX_NOTE_CHARS:
            text = text[:MAX_NOTE_CHARS]
            long.append(place)
        out.append(text)
    notes = []
    if nul:
        notes.append(f"NUL bytes removed from the note text of {_places(nul)}; check the export that wrote them")
    if long:
        notes.append(
            f"note text of {_places(long)} is longer than {MAX_NOTE_CHARS:,} characters; cut there -- split the note "
            "or check the export"
        )
    return out, notes


def _places(places: list[str], limit: int = 10) -> str:
    return ", ".join(places[:limit]) + (f" and {len(places) - limit} more" if len(places) > limit else "")


def _read_raw(path: Path, encoding: str = "auto") -> pd.DataFrame:
    """All columns as strings (missing → ''), whatever the format; ``attrs["encoding"]``: the text encoding used."""
    suffix = path.suffix.lower()
    if reason := special_reason(path):
        raise InputError(f"{path}: {reason}")
    if suffix not in SUPPORTED:
        raise InputError(
            f"{path}: unsupported notes format {suffix or '(no suffix)'!r}; save the notes as one of "
            f"{', '.join(SUPPORTED)}, or point notes.path at a folder of per-patient folders of text files."
        )
    try:
        if suffix == ".parquet":
            return _as_strings(pd.read_parquet(path))
        decoded = decode_text(path.read_bytes(), encoding, str(path), "notes.encoding")
        sep = "," if suffix == ".csv" else "\t"
        text = decoded.text
        frame = parse_delimited(text, sep, path.name) if suffix in (".csv", ".tsv") else _read_jsonl(path, text)
        frame.attrs["encoding"] = decoded.encoding
        if issue := decoded.issue(path.name, encoding, "notes.encoding"):
            frame.attrs[ISSUES] = [issue, *frame.attrs.get(ISSUES, [])]
        return frame
    except InputError:
        raise
    except (ValueError, OSError) as exc:  # pandas parser errors, pyarrow errors
        raise InputError(f"{path}: cannot be read as {suffix[1:]} ({exc}). Check the file's format.") from None


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    """One JSON object per line; blank lines are ignored (they are not data rows).

    A line that is not a JSON object is quarantined: an empty row whose reason (``attrs["quarantined"]``, by row
    number) names the file and line; the other lines load.
    """
    records: list[dict] = []
    quarantined: dict[int, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            problem = (
                "" if isinstance(record, dict) else f"expected a JSON object per line, got {type(record).__name__}"
            )
        except (json.JSONDecodeError, RecursionError) as exc:
            record, problem = {}, f"not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})"
        if problem:
            record = {}
            quarantined[len(records) + 1] = (
                f"{path.name}, row {len(records) + 1} (line {number}): {problem}; quarantined -- fix or remove the line"
            )
        records.append({_valid(str(k)): _valid(v) if isinstance(v, str) else v for k, v in record.items()})
    if not records:
        raise InputError(f"{path}: the file holds no JSON lines; it needs one JSON object per note.")
    if len(quarantined) == len(records):
        raise InputError(f"{path}: no line is a JSON object (first: {quarantined[1]}); is it JSON lines?")
    frame = _as_strings(pd.DataFrame.from_records(records))
    frame.attrs[QUARANTINED] = quarantined
    return frame


def _valid(text: str) -> str:
    """A JSON string without lone surrogates (``"\\ud800"`` is valid JSON, not valid text): each becomes U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as ``str``; missing values (None, NaN, NaT) become ''."""
    frame.columns = [str(c) for c in frame.columns]
    return frame.apply(
        lambda col: col.map(lambda v: "" if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)) else str(v))
    )


def _require_columns(raw: pd.DataFrame, spec: NotesSpec, path: Path) -> None:
    wanted = {
        "notes.patient_column": spec.patient_column,
        "notes.text_column": spec.text_column,
        "notes.note_id_column": spec.note_id_column,
        "notes.note_type_column": spec.note_type_column,
        "notes.date_column": spec.date_column,
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


# ----------------------------------------------------------------------------------------------- folders


def _in_patient_folder(rel: PurePath, file_glob: str) -> bool:
    """``rel`` (relative to the notes root) is ``<patient>/<file matching notes.file_glob>``."""
    depth_ok = len(rel.parts) == 2 or ("/" in file_glob or "**" in file_glob) and len(rel.parts) > 2
    return depth_ok and PurePath(*rel.parts[1:]).match(file_glob)


def _read_folder(
    spec: NotesSpec, root: Path, roots: list[Path] | None = None, follow_outside: bool = FOLLOW_LINKS_OUTSIDE
) -> tuple[pd.DataFrame, list[str]]:
    """``root/<patient>/<note file>``: one row per note file; an unreadable file is a skipped row.

    The folders are walked with ``ingest.walk``: a pipe, a link loop or a link out of the dataset's roots under a
    patient folder is a skipped row with its reason, never opened.
    """
    pattern = re.compile(spec.file_name_pattern) if spec.file_name_pattern else None
    rows, issues = [], []
    walked = walk(root, roots if roots is not None else [root], follow_outside)
    found = [(Path(p), "") for p in walked.files] + [(Path(p), reason) for p, reason in walked.skipped]
    for file, problem in sorted(found, key=lambda f: f[0].parts):
        rel = file.relative_to(root)
        if not problem and not _in_patient_folder(rel, spec.file_glob):
            continue  # a stray file beside the patient folders, or one the glob leaves out: not a note
        row = {  # printable: a folder or file name that is not UTF-8 shows its bytes as \xNN (ingest.walk)
            Col.PATIENT: printable(rel.parts[0]).strip() if len(rel.parts) > 1 else "",
            Col.NOTE_ID: printable(rel),
            Col.SOURCE: printable(file),
            Col.ROW: None,
            Col.NOTE_TYPE: "",
            Col.NOTE_DATE: "",
            Col.TEXT: "",
            "_error": f"unreadable note file: {problem}" if problem else "",
        }
        if not problem and pattern is not None and (m := pattern.search(file.name)):
            row[Col.NOTE_TYPE] = (m.groupdict().get("type") or "").strip()
            row[Col.NOTE_DATE] = (m.groupdict().get("date") or "").strip()
        if not problem:
            try:
                name = printable(rel)
                decoded = decode_text(file.read_bytes(), spec.encoding, name, "notes.encoding")
                texts, cleaning = clean_texts([decoded.text], ["the file"])
                row[Col.TEXT] = texts[0]
                issues += [i for i in [decoded.issue(name, spec.encoding, "notes.encoding")] if i] + [
                    f"{name}: {c}" for c in cleaning
                ]
            except (InputError, OSError) as exc:
                row["_error"] = f"unreadable note file: {exc}"
        rows.append(row)
    if not rows:
        raise InputError(
            f"{root}: no note files matching {spec.file_glob!r} in any patient folder (expected "
            f"{root}/<patient id>/<note>{spec.file_glob.lstrip('*')}). Check notes.path and notes.file_glob."
        )
    return pd.DataFrame(rows), issues


# ------------------------------------------------------------------------------------------------ checks


def _where(source: str, row: object) -> str:
    return f"{Path(source).name} row {row}" if row is not None and not pd.isna(row) else str(source)


def _check(index: pd.DataFrame, spec: NotesSpec) -> tuple[list[str], list[str]]:
    """Status and reason of each note, and its date normalised to YYYY-MM-DD in place."""
    statuses, reasons, first_row = [], [], {}
    wanted = {t.strip().lower() for t in spec.note_types} if spec.note_types is not None else None
    errors = index["_error"] if "_error" in index.columns else [""] * len(index)
    dates = []
    for patient, note_id, kind, date, text, source, row, error in zip(
        index[Col.PATIENT],
        index[Col.NOTE_ID],
        index[Col.NOTE_TYPE],
        index[Col.NOTE_DATE],
        index[Col.TEXT],
        index[Col.SOURCE],
        index[Col.ROW],
        errors,
        strict=True,
    ):
        where = _where(source, row)
        parsed, date_error = parse_date(date, spec.date_format)
        dates.append(parsed)
        if error:
            reason = error  # an unreadable file or a quarantined row, named with its reason
        elif not patient:
            reason = f"empty patient id in {where}; fill it or remove the row"
        elif not str(text).strip():
            reason = f"empty note text in {where}; fill it or remove the row"
        elif note_id in first_row:
            reason = f"note id in {where} repeats {first_row[note_id]}; kept the first, give each note its own id"
        elif date_error:
            reason = f"note date {date!r} in {where} {date_error}"
        elif wanted is not None and str(kind).strip().lower() not in wanted:
            reason = f"note type {kind!r} in {where} is not one of notes.note_types {sorted(wanted)}; left out"
        else:
            reason = ""
            first_row[note_id] = f"row {row}" if row is not None and not pd.isna(row) else str(source)
        statuses.append(Status.SKIPPED.value if reason else Status.OK.value)
        reasons.append(reason)
    index[Col.NOTE_DATE] = dates
    return statuses, reasons


def parse_date(value: str, fmt: str | None) -> tuple[str, str]:
    """``(YYYY-MM-DD or '', error)``: an empty value is no date; an unparsable one is an error with the fix."""
    value = str(value or "").strip()
    if not value:
        return "", ""
    try:
        stamp = pd.to_datetime(value, format=fmt or "ISO8601")
    except (ValueError, TypeError, OverflowError):
        how = f"the format {fmt!r} (notes.date_format)" if fmt else "YYYY-MM-DD (or set notes.date_format)"
        return "", f"is not a date; write it as {how}"
    return stamp.strftime("%Y-%m-%d"), ""


# ----------------------------------------------------------------------------------- window (label date)


def label_dates(spec: DatasetSpec, table: pd.DataFrame | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """patient -> label date (YYYY-MM-DD), and patient -> why it has none (empty or bad date, with the row).

    ``table``: the labels file already read (``labels.read_labels_table``); read here when not given.
    """
    labels = spec.labels
    if labels is None or labels.date_column is None:
        return {}, {}
    path = spec.resolve(labels.path)
    from clinicmm.ingest.labels import read_labels_table

    table = read_labels_table(spec, table)
    if labels.date_column not in table.columns:
        raise InputError(
            f"{path}: no column {labels.date_column!r} (named by labels.date_column in dataset.yaml); "
            f"the file has columns {', '.join(map(repr, table.columns))}. Rename it or fix the key."
        )
    dates, missing = {}, {}
    for row, (pid, value) in enumerate(zip(table[labels.patient_column], table[labels.date_column]), start=1):
        pid = str(pid).strip()
        parsed, error = parse_date(str(value), spec.notes.date_format if spec.notes else None)  # one site, one format
        if parsed and pid not in dates:
            dates[pid] = parsed
        elif not parsed and pid not in dates:
            what = f"label date {value!r} {error}" if error else "no label date"
            missing[pid] = f"{what} ({path.name} row {row}, column {labels.date_column!r})"
    return dates, missing


def apply_window(index: pd.DataFrame, spec: DatasetSpec, labels_table: pd.DataFrame | None = None) -> list[str]:
    """Mark notes outside ``notes.window`` (days around each patient's label date) as skipped, in place.

    Returns report notes. Without a labels table (prediction) there is no label date and every note counts.
    ``labels_table``: the labels file already read, as in :func:`label_dates`.
    """
    window = spec.notes.window if spec.notes else None
    if window is None or index.empty:
        return []
    if spec.labels is None:
        return ["notes.window not applied: the dataset has no labels (so no label dates); every note counts"]
    dates, missing = label_dates(spec, labels_table)
    ok = index[Col.STATUS] == Status.OK
    for i in index.index[ok]:
        pid, date, where = (
            index.at[i, Col.PATIENT],
            index.at[i, Col.NOTE_DATE],
            _where(index.at[i, Col.SOURCE], index.at[i, Col.ROW]),
        )
        reason = ""
        if not date:
            reason = f"note in {where} has no date, so notes.window cannot place it; add its date"
        elif pid not in dates:
            reason = f"patient has {missing.get(pid, 'no row in the labels file')}: notes.window cannot place the note in {where}"
        else:
            days = (pd.Timestamp(dates[pid]) - pd.Timestamp(date)).days
            early = window.days_before is not None and days > window.days_before
            if days < window.until_days_before or early:
                reason = (
                    f"note in {where} dated {date} is {days} days before the label date {dates[pid]}, outside "
                    f"notes.window [{window.days_before if window.days_before is not None else 'any'}, "
                    f"{window.until_days_before}] days before; left out"
                )
        if reason:
            index.at[i, Col.STATUS], index.at[i, Col.REASON] = Status.SKIPPED.value, reason
    return []
