"""One file per sample, as the GDC Data Portal downloads TCGA today: a folder of files and the GDC sample sheet.

``genomics.expression`` (or a layer) with ``sample_sheet`` set reads ``path`` as a folder: the sample sheet
(``gdc_sample_sheet.*.tsv``, columns ``File ID``, ``File Name``, ``Sample ID`` ...) says which file is which sample;
each file is found under the folder by its name (the GDC puts it in a folder named by its file id), and one column of
it is read as that sample's values:

* STAR gene counts (``*.rna_seq.augmented_star_gene_counts.tsv``): a ``# gene-model`` line, then ``gene_id
  gene_name gene_type unstranded ... tpm_unstranded fpkm_unstranded ...``; the column follows the layer's
  ``unit`` (tpm -> ``tpm_unstranded``, counts -> ``unstranded``, fpkm -> ``fpkm_unstranded``) and STAR's
  ``N_unmapped`` / ``N_multimapping`` / ``N_noFeature`` / ``N_ambiguous`` rows (HTSeq's ``__no_feature`` ...)
  are read counts, not genes, and are left out;
* miRNA quantification (``miRNA_ID read_count reads_per_million_miRNA_mapped cross-mapped``): reads per million;
* SeSAMe methylation betas (``*.level3betas.txt``, no header: probe and beta) and any two-column file: the second;
* gene-level copy number (``gene_id gene_name chromosome start end copy_number ...``): ``copy_number``;
* anything else: the column ``quantity`` names.

The feature ids are each file's first column. A sample whose file is missing, unreadable or lacks the column is
kept in the sample table as skipped, with the reason; files under the folder that the sheet does not name
(``annotations.txt``, logs) are counted and not read. Symbolic links are followed only inside the dataset's folders.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clinicmm.errors import InputError
from clinicmm.ingest.barcodes import type_rank
from clinicmm.ingest.tables import NA_TOKENS, cell_numbers, file_separator, first_rows, header_at, is_number, spelled
from clinicmm.ingest.walk import printable, walk

PROGRESS_MIN_FILES = 50  # a progress bar from this many files on
READ_COUNT_ROWS = re.compile(r"^(N_(unmapped|multimapping|noFeature|ambiguous)|__\w+)$")  # STAR / HTSeq summaries
UNIT_COLUMNS = {"tpm": "tpm_unstranded", "counts": "unstranded", "fpkm": "fpkm_unstranded"}
OTHER_COLUMNS = ("reads_per_million_mirna_mapped", "beta_value", "copy_number", "value")
SHEET_FILE, SHEET_SAMPLE, SHEET_FILE_ID = "file_name", "sample_id", "file_id"


@dataclass
class SampleFiles:
    """The samples of a sample sheet, samples x features; a sample that could not be read has a reason."""

    sample_ids: list[str]
    rows: list[int]  # the sample sheet's data row of each sample
    sources: list[str]  # the file read for each sample ('' when none was found)
    features: list[str]
    values: np.ndarray  # float, NaN where missing or not a number
    bad: np.ndarray  # bool: a cell that is not a finite number
    raw: dict[tuple[int, int], str] = field(default_factory=dict)  # the bad cells as written, for the reason only
    reasons: dict[int, str] = field(default_factory=dict)  # sample -> why its file gave no values
    issues: list[str] = field(default_factory=list)


@dataclass
class _File:
    positions: np.ndarray  # feature index of each row read
    values: np.ndarray
    bad: np.ndarray
    raw: dict[int, str]
    summary: int  # read-count summary rows left out
    repeated: int  # rows whose feature id came earlier in the file, left out
    segments: dict[str, int] = field(default_factory=dict)  # a segment file's segments left out, by reason


def _sheet(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    from clinicmm.ingest.labels import read_table

    table = read_table(path)
    columns = {spelled(c): c for c in table.columns}
    missing = [name for name in (SHEET_FILE, SHEET_SAMPLE) if name not in columns]
    if missing:
        raise InputError(
            f"{path}: the sample sheet needs the columns 'File Name' and 'Sample ID' (the GDC's names; case and "
            f"spacing do not matter) and lacks {', '.join(repr(m) for m in missing)}. Use the sample sheet the GDC "
            "Data Portal gives with the download, or add the columns."
        )
    return table, columns


def _sample_of(cell: str) -> str:
    """One sample id of a sheet cell: the GDC lists a tumour and its normal for some files; the tumour is read."""
    ids = [s.strip() for s in cell.split(",") if s.strip()]
    if not ids:
        return ""
    return min(enumerate(ids), key=lambda t: (type_rank(t[1]), t[0]))[1]


def _value_column(header: list[str], unit: str, quantity: str | None) -> int | None:
    names = [spelled(c) for c in header]
    wanted = [spelled(quantity)] if quantity else [UNIT_COLUMNS.get(unit, ""), *OTHER_COLUMNS]
    found = next((names.index(w) for w in wanted if w and w in names), None)
    if found is None and quantity is None and len(header) == 2:
        return 1
    return found


def _read_file(path: Path, unit: str, quantity: str | None, key: str, index: dict[str, int]) -> _File | str:
    """One sample's file (its values, positioned by feature) or why it cannot be read."""
    sep = file_separator(path)
    try:
        top = first_rows(path, sep, 64)
    except InputError:  # not UTF-8 text, a field past the csv module's limit: this sample only
        return f"{printable(path.name)} cannot be read as UTF-8 text; check the file (a compressed file needs .gz)"
    at = header_at(top)
    if at is None:
        return f"{printable(path.name)} holds no data rows"
    header = top[at] if not is_number(top[at][-1].strip()) else ["id", "value"][: len(top[at])]
    column = _value_column(header, unit, quantity)
    if column is None or len(top[at]) < 2:
        wanted = repr(quantity) if quantity else f"a {UNIT_COLUMNS.get(unit, 'value')!r} column"
        shown = ", ".join(repr(c) for c in header[:10])
        return (f"{printable(path.name)} has no {wanted} (its columns: {shown}); set {key}.quantity to the column "
                "to read")  # fmt: skip
    skip = at + 1 if header is top[at] else at
    try:
        cells = pd.read_csv(path, sep=sep, header=None, names=range(len(top[at])), skiprows=skip,
                            usecols=[0, column], dtype=str, keep_default_na=False, comment=None,
                            encoding="utf-8-sig")  # fmt: skip  # the header's width: a short row is padded
    except (ValueError, OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        return f"{printable(path.name)} cannot be read as a table ({type(exc).__name__}); check the file"
    ids = cells[0].fillna("").str.strip()
    summary = ids.str.match(READ_COUNT_ROWS)
    repeated = (ids != "") & ~summary & ids.duplicated()
    keep = (ids != "") & ~summary & ~repeated
    ids, text = ids[keep], cells[column][keep].fillna("").str.strip()
    numbers, bad = (a[:, 0] for a in cell_numbers(text.where(~text.isin(NA_TOKENS)).to_frame()))
    positions = np.fromiter((index.setdefault(i, len(index)) for i in ids), dtype=np.int64, count=len(ids))
    raw = {int(positions[k]): text.iat[k] for k in np.flatnonzero(bad)}
    return _File(positions, numbers, bad, raw, int(summary.sum()), int(repeated.sum()))


def _read_segments(path: Path, assembly: str, sample_id: str, index: dict[str, int]) -> _File | str:
    """One sample's segment file as its band values, positioned by band."""
    from clinicmm.ingest.segments import read_segment_file

    read = read_segment_file(path, assembly, sample_id)
    if isinstance(read, str):
        return read
    positions = np.fromiter(
        (index.setdefault(b, len(index)) for b in read.bands), dtype=np.int64, count=len(read.bands)
    )
    return _File(positions, read.values[0], np.zeros(len(read.bands), dtype=bool), {}, 0, 0, read.left_out)


def read_sample_files(
    folder: Path,
    sheet: Path,
    unit: str,
    quantity: str | None,
    key: str,
    roots: list[Path] | None = None,
    follow_outside: bool = False,
    segments: str | None = None,
) -> SampleFiles:
    """Read the files the GDC sample sheet names under ``folder`` (see the module notes). ``segments``: each file
    is one sample's copy-number segments in that assembly (hg19 / hg38), read as band values
    (:mod:`clinicmm.ingest.segments`)."""
    if not folder.is_dir():
        raise InputError(
            f"{folder}: {key}.path must be the folder of the downloaded files when {key}.sample_sheet is set"
        )
    table, columns = _sheet(sheet)
    walked = walk(folder, roots if roots is not None else [folder], follow_outside)
    by_name: dict[str, list[Path]] = {}
    for found in walked.files:
        by_name.setdefault(Path(found).name, []).append(Path(found))
    refused = {Path(p).name: reason.split(": ", 1)[-1] for p, reason in walked.skipped}  # without walk's path prefix
    quarantined = table.attrs.get("quarantined", {})
    ids = table[columns[SHEET_FILE_ID]] if SHEET_FILE_ID in columns else None
    out = SampleFiles([], [], [], [], np.empty((0, 0)), np.empty((0, 0), dtype=bool))
    files: list[_File | None] = []
    index: dict[str, int] = {}
    rows = list(zip(table[columns[SHEET_FILE]], table[columns[SHEET_SAMPLE]], strict=True))
    bar = tqdm(rows, desc=f"Reading {key} files", unit="file", file=sys.stderr,
               disable=None if len(rows) >= PROGRESS_MIN_FILES else True)  # fmt: skip
    for row, (name, cell) in enumerate(bar, start=1):
        name, where = str(name).strip(), f"{sheet.name} row {row}"
        out.sample_ids.append(_sample_of(str(cell)))
        out.rows.append(row)
        candidates = by_name.get(name, [])
        if ids is not None and len(candidates) > 1:  # the GDC's folder is the file id
            candidates = [p for p in candidates if p.parent.name == str(ids.iat[row - 1]).strip()] or candidates
        path = candidates[0] if candidates else None
        out.sources.append(str(path) if path else "")
        reason = quarantined.get(row) or (
            f"{where} names no file" if not name else
            f"{where}: {printable(name)} under {folder.name} is {refused[name]}" if name in refused and path is None else
            f"{where}: {printable(name)} is not under {folder.name}; download it or remove the row" if path is None
            else ""
        )  # fmt: skip
        if reason:
            read = reason
        elif segments:
            read = _read_segments(path, segments, out.sample_ids[-1], index)
        else:
            read = _read_file(path, unit, quantity, key, index)
        if isinstance(read, str):
            out.reasons[len(files)] = read if read.startswith(where) else f"{where}: {read}"
            files.append(None)
            continue
        files.append(read)
    bar.close()
    out.features = list(index)
    out.values = np.full((len(files), len(index)), np.nan)
    out.bad = np.zeros((len(files), len(index)), dtype=bool)
    for i, read in enumerate(files):
        if read is not None:
            out.values[i, read.positions] = read.values
            out.bad[i, read.positions] = read.bad
            out.raw |= {(i, j): text for j, text in read.raw.items()}
    named = {str(name).strip() for name, _ in rows}
    extra = sum(1 for p in walked.files if Path(p).name not in named)
    read_ok = sum(f is not None for f in files)
    out.issues.append(
        f"{folder.name}: {read_ok} of {len(files)} sample files named by {sheet.name} read"
        + (f"; {extra} other file(s) under the folder are not in the sheet and were not read" if extra else "")
    )
    repeated = sum(1 for f in files if f is not None and f.repeated)
    if repeated:
        out.issues.append(
            f"{folder.name}: {repeated} file(s) name a feature id on two rows or more; the first row of each was read"
        )
    summary = max((f.summary for f in files if f is not None), default=0)
    if summary:
        out.issues.append(
            f"{folder.name}: {summary} read-count summary row(s) per file (STAR's N_unmapped, N_multimapping, "
            "N_noFeature, N_ambiguous; HTSeq's __no_feature ...) left out: they count reads, they are no genes"
        )
    if segments:  # each file's segments left out (other sequences, NA, past the chromosome's end), summed
        from clinicmm.ingest.segments import ASSEMBLIES, left_out_lines

        read = [f.segments for f in files if f is not None and f.segments]
        counts = {k: sum(c.get(k, 0) for c in read) for k in ("other", "na", "past", "used")}
        with_any = sum(1 for c in read if c.get("other") or c.get("na") or c.get("past"))
        out.issues.extend(left_out_lines(folder.name, counts, ASSEMBLIES[segments.lower()], files=with_any))
    return out
