"""Text tables read row by row: one bad row is quarantined (file, row, reason), the rest of the table loads.

Shared by the notes tables and the labels file. Two things used to stop a whole cohort and no longer do:

* **decoding**: a file is read as UTF-8 (a BOM is dropped). When only a few of its lines are not valid UTF-8
  (at most :data:`FEW_BAD_LINES` lines or :data:`FEW_BAD_SHARE` of them, and fewer than half), it *is* UTF-8 with
  a few damaged bytes: those bytes become U+FFFD and the line numbers are reported -- a handful of bad bytes can
  no longer make a whole file decode as some other code page. Only a file that is clearly not UTF-8 as a whole
  is decoded with the encoding charset-normalizer detects (cp1252 then latin-1 when it is not installed), and
  the report says so.
* **rows**: a CSV/TSV row with more fields than the header (a stray separator or quote) cannot be assigned to
  columns; it is quarantined and the others load. A row with fewer fields is padded with empty cells, as
  before, and named in the issues. Quarantined rows stay in the table as empty rows so that row numbers keep
  meaning the file's data rows (header excluded, blank lines not counted); ``attrs["quarantined"]`` maps each
  quarantined row number to its reason and ``attrs["issues"]`` holds the file-level notes.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.errors import InputError

FEW_BAD_LINES = 3  # this many undecodable lines are always "a few bad bytes" in a UTF-8 file ...
FEW_BAD_SHARE = 0.05  # ... or this share of the file's lines, whichever is more
QUARANTINED = "quarantined"  # DataFrame.attrs key: {row number: reason}
ISSUES = "issues"  # DataFrame.attrs key: file-level notes for the ingest report


@dataclass
class Decoded:
    text: str
    encoding: str  # 'utf-8' or the detected / configured encoding
    bad_lines: list[int] = field(default_factory=list)  # 1-based lines whose bad bytes became U+FFFD

    def issue(self, name: str, configured: str = "auto", setting: str = "the encoding") -> str | None:
        """The report note on how the file was decoded, or None when it was plain UTF-8 (or as configured)."""
        if self.bad_lines:
            return (
                f"{name}: line(s) {_numbers(self.bad_lines)} hold bytes that are not UTF-8; they were replaced by "
                "U+FFFD and the rest of the file read as UTF-8. Check those rows, or re-save the file as UTF-8"
            )
        if self.encoding not in ("utf-8", configured):
            return f"{name}: not UTF-8; decoded as {self.encoding} (detected). Check a few rows read correctly, or set {setting}"
        return None


def _numbers(values: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def decode_text(
    data: bytes, encoding: str, where: str, setting: str = "the encoding", lenient: bool = False
) -> Decoded:
    """Decode a table or note file; ``encoding='auto'``: UTF-8 (tolerating a few bad lines), else detection.

    ``setting``: the YAML key that sets the encoding, for messages (``notes.encoding``). ``lenient``: bad bytes
    become U+FFFD instead of an error (an explicit encoding that does not fit; text no encoding fits is then read
    as UTF-8); de-identification uses it, so a badly encoded note is still copied, scrubbed, rather than stop the
    dataset. An unknown encoding name is an error either way.
    """
    if encoding != "auto":
        try:
            return Decoded(
                data.decode(encoding, errors="replace" if lenient else "strict").removeprefix("\ufeff"), encoding
            )
        except (UnicodeDecodeError, LookupError) as exc:
            detail = f"bad byte at offset {exc.start}" if isinstance(exc, UnicodeDecodeError) else "unknown encoding"
            raise InputError(
                f"{where}: cannot be read as {encoding} ({detail}); set {setting} to the file's encoding, or to "
                "auto to detect it, or re-save the file as UTF-8."
            ) from None
    try:
        return Decoded(data.decode("utf-8-sig"), "utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
    lines = data.split(b"\n")
    bad = [i for i, line in enumerate(lines, start=1) if not _is_utf8(line)]
    filled = sum(1 for line in lines if line.strip()) or 1
    if len(bad) <= max(FEW_BAD_LINES, FEW_BAD_SHARE * filled) and 2 * len(bad) < filled:
        return Decoded(data.decode("utf-8-sig", errors="replace"), "utf-8", bad)
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover -- charset-normalizer ships with the requirements
        return _fallback(data)
    best = from_bytes(data).best()
    if best is None and lenient:
        return Decoded(data.decode("utf-8-sig", errors="replace"), "utf-8")
    if best is None:
        raise InputError(
            f"{where}: not valid UTF-8 text (bad byte at offset {offset}) and no other encoding fits; "
            f"tried utf-8 and detection. Re-save the file as UTF-8 or set {setting}."
        )
    return Decoded(str(best), best.encoding)


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _fallback(data: bytes) -> Decoded:
    try:
        return Decoded(data.decode("cp1252"), "cp1252")
    except UnicodeDecodeError:
        return Decoded(data.decode("latin-1"), "latin-1")


def parse_delimited(text: str, sep: str, where: str) -> pd.DataFrame:
    """A CSV/TSV text as a table of strings; a row with too many fields is quarantined (see the module notes).

    A well-formed table is read by pandas as before; only one pandas refuses is read row by row.
    """
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{where}: the file is empty; it needs a header row and one row per record.") from None
    except (pd.errors.ParserError, ValueError):
        return parse_rows(text, sep, where)
    frame.attrs.update({QUARANTINED: {}, ISSUES: []})
    return frame


def parse_rows(text: str, sep: str, where: str) -> pd.DataFrame:
    """:func:`parse_delimited` row by row (Python's csv module), quarantining the rows it cannot place."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long note is one field; the default is 128 KiB
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header: list[str] | None = None
    rows: list[list[str]] = []
    quarantined: dict[int, str] = {}
    short: list[int] = []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if header is None:
                raise InputError(f"{where}: the header row cannot be parsed ({exc}); fix the first line.") from None
            rows.append([""] * len(header))
            quarantined[len(rows)] = f"{where}, row {len(rows)} (line {start}): cannot be parsed ({exc}); fix the row"
            continue
        if not record:  # a blank line is no row
            continue
        if header is None:
            header = _names(record)
            continue
        rows.append(record[: len(header)] + [""] * (len(header) - len(record)))
        lines = f"line {start}" if reader.line_num == start else f"lines {start}-{reader.line_num}"
        if len(record) > len(header):
            rows[-1] = [""] * len(header)
            quarantined[len(rows)] = (
                f"{where}, row {len(rows)} ({lines}): {len(record)} fields where the header has {len(header)}; "
                "quarantined -- fix the stray separator or quote in that row"
            )
        elif len(record) < len(header):
            short.append(len(rows))
    if header is None:
        raise InputError(f"{where}: the file is empty; it needs a header row and one row per record.")
    frame = pd.DataFrame(rows, columns=header, dtype=object) if rows else pd.DataFrame(columns=header, dtype=object)
    frame.attrs[QUARANTINED] = quarantined
    frame.attrs[ISSUES] = (
        [f"{where}: row(s) {_numbers(short)} have fewer fields than the header; their missing cells read as empty"]
        if short
        else []
    )
    return frame


def _names(record: list[str]) -> list[str]:
    """Header names as pandas gives them: an empty one is ``Unnamed: i``, a repeated one gets ``.1``, ``.2``."""
    names, seen = [], {}
    for i, name in enumerate(record):
        name = name or f"Unnamed: {i}"
        base, n = name, seen.get(name, 0)
        while name in seen:
            n += 1
            name = f"{base}.{n}"
        seen[base] = n
        seen[name] = 0
        names.append(name)
    return names


def comment_lines(path: Path) -> int:
    """How many lines at the top start with '#' (a MAF's version and annotation headers, the column descriptions
    of a cBioPortal clinical file); gzip-compressed files too."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    count = 0
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle:
            for line in handle:
                if not line.startswith("#"):
                    break
                count += 1
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot be read ({exc}). Check the file.") from None
    return count


def table_format(path: Path, allowed: tuple[str, ...], key: str) -> str:
    """The format of ``path`` from its suffix (``.gz`` allowed on text tables): one of ``allowed``."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    fmt = (suffixes[-2] if len(suffixes) >= 2 else "") if gz else (suffixes[-1] if suffixes else "")
    if fmt not in allowed or (gz and fmt == ".parquet"):
        raise InputError(
            f"{path}: unsupported format for {key}; use one of {', '.join(allowed)} "
            "(text tables may be gzip-compressed, e.g. expression.tsv.gz)."
        )
    return fmt


def separator(fmt: str) -> str:
    return "," if fmt == ".csv" else "\t"


def file_separator(path: Path) -> str:
    """How a per-sample file of a download is split: commas for ``.csv`` (gzip too), else tabs."""
    return "," if path.name.lower().endswith((".csv", ".csv.gz")) else "\t"


def header_at(rows: list[list[str]]) -> int | None:
    """The first of ``rows`` (:func:`first_rows`) that is no ``#`` line above a header (a GDC gene model line, an
    IGV track line): the header, or a headerless file's first data row; None when there is none."""
    return next((i for i, row in enumerate(rows) if row and not row[0].startswith("#")), None)


def first_rows(path: Path, sep: str, count: int) -> list[list[str]]:
    """The first ``count`` rows of a text table (gzip too) as the csv module splits them, cells as written."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            return [row for _, row in zip(range(count), csv.reader(handle, delimiter=sep), strict=False)]
    except UnicodeDecodeError as exc:
        message = f"{path}: not valid UTF-8 text ({exc.reason}); tried encoding utf-8. Re-save it as UTF-8."
        raise InputError(message) from None
    except (OSError, EOFError, csv.Error) as exc:
        raise InputError(f"{path}: cannot be read as a table ({exc}). Check its format and separator.") from None


NA_TOKENS = ["", "NA", "NaN", "nan", "N/A", "NULL", "null", "None"]  # cells read as missing in the omics tables


def is_number(text: str) -> bool:
    """Whether a cell is a number or a missing-value token (not a name: a header row holds names)."""
    try:
        float(text)
    except ValueError:
        return text in NA_TOKENS
    return True


def spelled(name: object) -> str:
    """A column name compared without case and spacing: ``'File Name'`` -> ``'file_name'``."""
    return re.sub(r"[\s_]+", "_", str(name).strip().lower())


def cell_numbers(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Float values and a mask of cells that are neither a finite number nor missing (NaN / None), column by column:
    a column pandas parsed as numbers is taken as it is, any other is parsed cell by cell."""
    is_number = np.array([pd.api.types.is_numeric_dtype(d) for d in cells.dtypes], dtype=bool)
    values = np.empty(cells.shape, dtype=float)
    values[:, is_number] = cells.iloc[:, is_number].to_numpy(dtype=float)
    bad = np.isinf(values) & is_number[None, :]
    for j in np.flatnonzero(~is_number):  # columns pandas could not parse: find the cells at fault
        column = cells.iloc[:, j]
        values[:, j] = pd.to_numeric(column, errors="coerce").astype(float).to_numpy()
        bad[:, j] = (np.isnan(values[:, j]) & column.notna().to_numpy()) | np.isinf(values[:, j])
    values[bad] = np.nan
    return values, bad
