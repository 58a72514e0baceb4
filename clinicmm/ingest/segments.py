"""Copy-number segments as cytogenetic band values.

A segment table lists stretches of a sample's genome that share one copy-number value (a log2 ratio), one row per
segment, as every copy-number caller writes them:

* the GDC's Copy Number Segment and Masked Copy Number Segment files (``GDC_Aliquot Chromosome Start End
  Num_Probes Segment_Mean``; GRCh38), one file per aliquot, read with the download's sample sheet;
* cBioPortal's ``data_cna_hg19.seg`` and Firehose's ``segmented_scna`` tables (``ID`` / ``Sample``, ``chrom``,
  ``loc.start``, ``loc.end``, ``num.mark``, ``seg.mean``; hg19), all samples in one table;
* IGV's ``.seg`` format: sample, chromosome, start, end, then any columns, the value last.

``genomics.layers[i].segments: hg19 | hg38`` reads such a table in that assembly's coordinates: every cytogenetic
band of the assembly (UCSC's cytoBand, 862 bands; ``data/cytobands.tsv.gz``, see ``data/SOURCES.md``) gets the
length-weighted mean of the sample's segments over it, and the layer's features are the bands (``17q12``,
``8q24.21``), which link to the genes located in them like any ``features: cytoband`` column
(:mod:`clinicmm.ingest.cytobands`). A band no segment of a sample covers is missing for that sample (the encoder
reads the training mean); a band no sample covers is no feature.

Chromosomes are read as ``1``-``22``, ``X``, ``Y``, with or without ``chr``, and ``23`` / ``24`` for X / Y (IGV,
Firehose); rows on other sequences (``MT``, unplaced contigs) and rows without a value (NA) are counted and left out.
A row whose coordinates or value are not numbers skips its sample with the reason. Segments that end past their
chromosome's end in the chosen assembly are counted: many of them mean the table is in the other assembly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.errors import InputError
from clinicmm.ingest.tables import (
    NA_TOKENS,
    cell_numbers,
    file_separator,
    first_rows,
    header_at,
    separator,
    spelled,
    table_format,
)

ASSEMBLIES = {"hg19": "hg19", "grch37": "hg19", "hg38": "hg38", "grch38": "hg38"}
SHIPPED_BANDS = "cytobands.tsv.gz"
SEGMENT_SUFFIXES = (".seg", ".csv", ".tsv", ".txt")  # gzip-compressed too
CHROMOSOMES = [str(c) for c in range(1, 23)] + ["X", "Y"]
_CHROMOSOME = re.compile(r"^(?:chr)?(\d{1,2}|x|y)$", re.IGNORECASE)
# each role's column names, compared by tables.spelled (case, spaces and underscores ignored; dots kept)
ROLE_NAMES = {
    "chromosome": ("chromosome", "chrom", "chr", "chromosome_name", "seqnames", "contig"),
    "start": ("start", "loc.start", "startpos", "start_position", "chromstart", "chrom_start"),
    "end": ("end", "loc.end", "endpos", "end_position", "stop", "chromend", "chrom_end"),
    "value": (
        "segment_mean",
        "seg.mean",
        "seg_mean",
        "segmean",
        "log2",
        "log2_ratio",
        "log2ratio",
        "copy_number",
        "total_copy_number",
        "mean",
        "value",
    ),
    "markers": ("num_probes", "num.mark", "num_mark", "nummark", "num_markers", "probes"),
    "sample": ("gdc_aliquot", "id", "sample", "sample_id", "samples", "tumor_sample_barcode", "aliquot", "barcode"),
}
MAX_SEGMENT_COLUMNS = 12  # a segment table is narrow; a wide one with such names is a gene table's annotation


@dataclass
class Bands:
    """One assembly's bands: ``names`` (``17q12``) and, per chromosome, the positions and coordinates of its bands."""

    assembly: str
    names: list[str]
    by_chromosome: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # band index, start, end (0-based, half-open)
    lengths: dict[str, int]  # the chromosome's end: its last band's end


def bands(assembly: str) -> Bands:
    """The shipped bands of ``assembly`` (hg19 / hg38, or GRCh37 / GRCh38), read once per process."""
    return _bands(ASSEMBLIES[assembly.lower()])


@lru_cache(maxsize=2)
def _bands(assembly: str) -> Bands:
    source = resources.files("clinicmm.ingest") / "data" / SHIPPED_BANDS
    with resources.as_file(source) as path:
        table = pd.read_csv(path, sep="\t", dtype={"chromosome": str, "band": str})
    table = table[table["assembly"] == assembly].reset_index(drop=True)
    names = (table["chromosome"] + table["band"]).tolist()
    by_chromosome, lengths = {}, {}
    for chromosome, part in table.groupby("chromosome", sort=False):
        by_chromosome[chromosome] = (part.index.to_numpy(), part["start"].to_numpy(), part["end"].to_numpy())
        lengths[chromosome] = int(part["end"].max())
    return Bands(assembly, names, by_chromosome, lengths)


def chromosome_of(cell: object) -> str | None:
    """``1``-``22``, ``X`` or ``Y`` of a chromosome cell (``chr7``, ``7``, ``chrX``, ``23`` -> X, ``24`` -> Y);
    None for other sequences (``MT``, ``chrUn_...``, ``GL000192.1``)."""
    match = _CHROMOSOME.match(str(cell).strip())
    if match is None:
        return None
    name = match[1].upper()
    name = {"23": "X", "24": "Y"}.get(name, name)
    return name if name in CHROMOSOMES else None


def segment_columns(header: list[str], sample_column: str | None = None) -> dict[str, int | None] | None:
    """Where each role sits in a segment table's ``header``: chromosome, start, end, value and sample (positions);
    None when the header has no chromosome, start and end columns by name. The sample is ``sample_column`` when
    the header has it, else a known name (``GDC_Aliquot``, ``ID``, ``Sample`` ...), else the first column (IGV);
    the value a known name (``Segment_Mean``, ``seg.mean``, ``log2``, ``Copy_Number`` ...), else the last column
    (IGV). A role left only to a coordinate column is None (a CNVkit ``.cns`` file names no sample)."""
    names = [spelled(h) for h in header]

    def find(role: str) -> int | None:
        return next((names.index(n) for n in ROLE_NAMES[role] if n in names), None)

    found: dict[str, int | None] = {role: find(role) for role in ("chromosome", "start", "end")}
    if any(v is None for v in found.values()):
        return None
    taken = set(found.values())
    value = find("value")
    found["value"] = value if value is not None or len(header) - 1 in taken else len(header) - 1
    wanted = spelled(sample_column) if sample_column else None
    sample = names.index(wanted) if wanted in names else find("sample")
    found["sample"] = sample if sample is not None or 0 in taken | {found["value"]} else 0
    return found


def looks_like_segments(header: list[str]) -> bool:
    """A narrow table naming chromosome, start and end columns and a segment mean or marker count: a segment table
    read as a matrix would give columns named 'Chromosome', 'Start' ... and link nothing."""
    names = {spelled(h) for h in header}
    return (
        len(header) <= MAX_SEGMENT_COLUMNS
        and segment_columns(header) is not None
        and bool(names & set(ROLE_NAMES["value"][:-2] + ROLE_NAMES["markers"]))
    )


@dataclass
class SegmentValues:
    """Samples x bands of a segment table; a sample that could not be read has a reason."""

    sample_ids: list[str]
    rows: list[int]  # the file's data row (1-based, after the header) of each sample's first segment
    bands: list[str]
    values: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    # segments left out and why ('other': other sequences, 'na': no value, 'past': past the chromosome's end of
    # 'used' read), so a folder of per-sample files can report them summed (:func:`left_out_lines`)
    left_out: dict[str, int] = field(default_factory=dict)


def left_out_lines(name: str, counts: dict[str, int], assembly: str, files: int = 0) -> list[str]:
    """The report's lines for the segments left out of ``counts`` (:attr:`SegmentValues.left_out`) in ``name`` (a
    table, or a folder whose ``files`` files they were summed over)."""
    where = f" in {files} file(s)" if files else ""
    lines = []
    if counts.get("other"):
        lines.append(
            f"{name}: {counts['other']} segment(s){where} on other sequences than chromosomes 1-22, X, Y left out"
        )
    if counts.get("na"):
        lines.append(f"{name}: {counts['na']} segment(s){where} without a value (NA) left out")
    if counts.get("past"):
        other_assembly = "hg19" if assembly == "hg38" else "hg38"
        lines.append(
            f"{name}: {counts['past']} of {counts['used']} segments{where} end past their chromosome's end in "
            f"{assembly}; if the coordinates are {other_assembly}, set segments: {other_assembly}"
        )
    return lines


def band_means(
    sample: np.ndarray, chromosome: np.ndarray, start: np.ndarray, end: np.ndarray, value: np.ndarray,
    n_samples: int, table: Bands,
) -> np.ndarray:  # fmt: skip
    """(n_samples, bands): each band's length-weighted mean of the segments over it (``start`` 0-based, ``end``
    exclusive); NaN where no segment of the sample covers any of the band."""
    n_bands = len(table.names)
    total = np.zeros(n_samples * n_bands)
    covered = np.zeros(n_samples * n_bands)
    for name, (index, band_start, band_end) in table.by_chromosome.items():
        rows = np.flatnonzero(chromosome == name)
        for chunk in np.array_split(rows, max(1, len(rows) // 50_000)):  # (segments x bands) at most ~20 MB
            overlap = np.minimum(end[chunk, None], band_end[None, :]) - np.maximum(
                start[chunk, None], band_start[None, :]
            )
            seg, band = np.nonzero(overlap > 0)
            weight = overlap[seg, band].astype(float)
            at = sample[chunk][seg] * n_bands + index[band]
            total += np.bincount(at, weights=weight * value[chunk][seg], minlength=total.size)
            covered += np.bincount(at, weights=weight, minlength=covered.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / covered).reshape(n_samples, n_bands)


def _numbers(cells: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, missing (empty or an NA token) and bad (text, infinite) flags of a column of cells."""
    text = cells.fillna("").astype(str).str.strip()
    missing = text.isin(NA_TOKENS)  # the empty cell among them
    numbers, bad = (a[:, 0] for a in cell_numbers(text.where(~missing).to_frame()))
    return numbers, missing.to_numpy(), bad


def segment_values(
    table: pd.DataFrame, header: list[str], columns: dict[str, int], assembly: str, name: str,
    samples: list[str] | None = None,
) -> SegmentValues:  # fmt: skip
    """Band values of the segments in ``table`` (cells as text, its columns positions in ``header``); ``samples``:
    one sample id for every row (a per-sample file), else the table's sample column. ``name``: the file, for
    messages."""
    table_bands = bands(assembly)
    ids = (
        pd.Series(samples, dtype=str)
        if samples is not None
        else table[columns["sample"]].fillna("").astype(str).str.strip()
    )
    order = list(dict.fromkeys(ids))
    codes = pd.Categorical(ids, categories=order).codes.astype(np.int64)
    cells = table[columns["chromosome"]].fillna("").astype(str)
    named = cells.map({c: chromosome_of(c) or "" for c in cells.unique()})  # a few dozen distinct names
    chromosome, known = named.to_numpy(dtype=object), (named != "").to_numpy()
    start, _, start_bad = _numbers(table[columns["start"]])
    end, _, end_bad = _numbers(table[columns["end"]])
    value, missing, value_bad = _numbers(table[columns["value"]])
    coordinates_bad = start_bad | end_bad | np.isnan(start) | np.isnan(end)
    with np.errstate(invalid="ignore"):
        coordinates_bad |= ~coordinates_bad & (end < start)
    out = SegmentValues(order, [0] * len(order), [], np.empty((0, 0)))
    first = pd.Series(np.arange(1, len(ids) + 1)).groupby(codes).first()
    out.rows = [int(first[i]) for i in range(len(order))]
    bad = (coordinates_bad | value_bad) & known
    coordinate_names = (header[columns["start"]], header[columns["end"]])
    for row in np.flatnonzero(bad):
        i = int(codes[row])
        if i in out.reasons:
            continue
        if start_bad[row] or np.isnan(start[row]) or end_bad[row] or np.isnan(end[row]) or value_bad[row]:
            what = (
                coordinate_names[0] if start_bad[row] or np.isnan(start[row])
                else coordinate_names[1] if end_bad[row] or np.isnan(end[row])
                else header[columns["value"]]
            )  # fmt: skip
            out.reasons[i] = (f"{name} row {row + 1}, column {what!r}: not a number (the cell is not shown: it may "
                              "hold anything); fix it or remove the row")  # fmt: skip
        else:
            out.reasons[i] = f"{name} row {row + 1}: the segment ends before it starts; fix the row or remove it"
    usable = known & ~missing & ~bad
    values = band_means(codes[usable], chromosome[usable], start[usable] - 1, end[usable], value[usable],
                        len(order), table_bands)  # fmt: skip  # .seg starts are 1-based
    for i in range(len(order)):
        if i not in out.reasons and np.isnan(values[i]).all():
            out.reasons[i] = (
                f"{name} row {out.rows[i]}: the sample has no segment with a value on chromosomes 1-22, X, Y"
            )
        if not order[i] and i not in out.reasons:
            out.reasons[i] = f"{name} row {out.rows[i]}: empty sample id; fill it or remove the rows"
    kept = np.flatnonzero(np.isfinite(values).any(axis=0))
    out.bands, out.values = [table_bands.names[j] for j in kept], values[:, kept]
    lengths = np.array([table_bands.lengths.get(c, np.inf) for c in chromosome[usable]], dtype=float)
    out.left_out = {
        "other": int((~known).sum()),
        "na": int(missing.sum()),
        "past": int((end[usable] > lengths).sum()),
        "used": int(usable.sum()),
    }
    out.issues.extend(left_out_lines(name, out.left_out, table_bands.assembly))
    return out


READ_ERRORS = (ValueError, OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError)


def _header(path: Path, sep: str) -> tuple[int, list[str]]:
    """The header's line (after any ``#`` lines: an IGV track line, a caller's notes) and its names."""
    top = first_rows(path, sep, 64)
    at = header_at(top)
    return (at, [c.strip() for c in top[at]]) if at is not None else (len(top), [])


def _segment_rows(path: Path, sep: str, at: int, columns: dict[str, int]) -> pd.DataFrame:
    """The cells of the role columns below the header, as text (a short row padded with empty cells)."""
    return pd.read_csv(path, sep=sep, header=None, skiprows=at + 1, dtype=str, keep_default_na=False,
                       usecols=sorted(set(columns.values())), encoding="utf-8-sig")  # fmt: skip


def read_segment_table(path: Path, assembly: str, sample_column: str | None, key: str) -> SegmentValues:
    """Every sample of one segment table (cBioPortal, Firehose, IGV; ``#`` lines above the header skipped)."""
    from clinicmm.ingest.walk import printable

    sep = separator(table_format(path, SEGMENT_SUFFIXES, f"{key}.path"))
    at, header = _header(path, sep)
    columns = segment_columns(header, sample_column)
    if columns is None:
        shown = ", ".join(repr(printable(h)) for h in header[:12])
        raise InputError(
            f"{path}: {key} has segments set but the header names no chromosome, start and end columns (it has "
            f"{shown}); a segment table has a sample, chromosome, start, end and value column per segment "
            "(GDC: GDC_Aliquot, Chromosome, Start, End, Segment_Mean; cBioPortal: ID, chrom, loc.start, loc.end, "
            "seg.mean)."
        )
    if columns["value"] is None or columns["sample"] is None:
        role, names = (("value", "Segment_Mean, seg.mean, log2, Copy_Number") if columns["value"] is None else
                       ("sample", "GDC_Aliquot, ID, Sample"))  # fmt: skip
        raise InputError(
            f"{path}: {key} names no {role} column ({names} …) and its "
            f"{'last' if role == 'value' else 'first'} column is a coordinate"
            + (
                f"; set {key}.sample_column to the column naming each segment's sample, or, for one file per sample "
                "(CNVkit's .cns), give the folder with a sample_sheet"
                if role == "sample"
                else ""
            )  # fmt: skip
            + "."
        )
    try:
        table = _segment_rows(path, sep, at, columns)
    except READ_ERRORS as exc:
        raise InputError(
            f"{path}: {key} cannot be read as a {'comma' if sep == ',' else 'tab'}-separated segment table "
            f"({type(exc).__name__}); check the separator and that every row has the header's columns."
        ) from None
    out = segment_values(table, header, columns, assembly, path.name)
    out.issues.insert(0, _roles_line(path.name, header, columns, len(out.sample_ids), len(table), assembly))
    return out


def _roles_line(name: str, header: list[str], columns: dict[str, int], samples: int, rows: int, assembly: str) -> str:
    roles = ", ".join(f"{role} {header[columns[role]]!r}" for role in ("sample", "chromosome", "start", "end", "value"))
    return (f"{name}: {rows} segments of {samples} samples read as copy-number segments in {ASSEMBLIES[assembly.lower()]} "
            f"({roles}), averaged over each cytogenetic band")  # fmt: skip


def read_segment_file(path: Path, assembly: str, sample_id: str) -> SegmentValues | str:
    """One sample's segment file of a GDC download (its own sample column, an aliquot UUID, is not read: the sample
    sheet names the sample): its band values, or why it cannot be read."""
    from clinicmm.ingest.walk import printable

    sep = file_separator(path)
    try:
        at, header = _header(path, sep)
    except InputError:
        return f"{printable(path.name)} cannot be read as UTF-8 text; check the file"
    columns = segment_columns(header)
    if columns is None or columns["value"] is None:
        return f"{printable(path.name)} names no chromosome, start, end and value columns: not a segment file"
    columns = {role: at for role, at in columns.items() if at is not None}  # its sample column is not read
    try:
        table = _segment_rows(path, sep, at, columns)
    except READ_ERRORS as exc:
        return f"{printable(path.name)} cannot be read as a table ({type(exc).__name__}); check the file"
    read = segment_values(table, header, columns, assembly, printable(path.name), [sample_id] * len(table))
    return next(iter(read.reasons.values())) if read.reasons else read
