"""Read genomic tables: an expression matrix and a mutation list (MAF or any table with the same columns).

Both readers map sample ids to patient ids with ``genomics.patient_id_pattern`` (the regex's first group; without
a pattern the sample id is the patient id). A sample or mutation row that cannot be used stays in the returned
index with ``status = skipped`` and a reason naming the file, row and column; it never stops the other samples.

Gene names are harmonised to current HGNC symbols when a :class:`~clinicmm.ingest.gene_names.GeneHarmonizer` is
given (:func:`read_genomics` gives one unless ``genomics.genes.harmonize`` is false): previous symbols, aliases,
Ensembl and NCBI gene ids become the current symbol; a column that then names a gene already present is dropped
(the one spelled as the current symbol wins); ``attrs["genes"]`` holds the counts and ``attrs["issues"]`` the
readable lines for the ingest report.

The expression reader keeps **one sample per patient** (a TCGA barcode's tumour sample before its normal-tissue
one, else the first usable one in file order; the patient's other samples are skipped with a reason), so its matrix
can be re-indexed by patient id with :func:`expression_by_patient`, which is what
:class:`clinicmm.encode.genomics.GenomicsPreprocessor` expects.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clinicmm.config import NON_SILENT_CLASSES, DatasetSpec, ExpressionSpec, MutationsSpec
from clinicmm.errors import ConfigError, InputError
from clinicmm.ingest.barcodes import sample_type, type_rank, type_words
from clinicmm.ingest.cytobands import parse_band
from clinicmm.ingest.feature_maps import gene_table, map_features, read_feature_map
from clinicmm.ingest.gene_names import GeneHarmonizer, harmonizer_for, summary_lines
from clinicmm.ingest.sample_files import PROGRESS_MIN_FILES, read_sample_files
from clinicmm.ingest.segments import SegmentValues, looks_like_segments, read_segment_table
from clinicmm.ingest.tables import (
    NA_TOKENS,
    cell_numbers,
    comment_lines,
    first_rows,
    is_number,
    separator,
    table_format,
)
from clinicmm.ingest.tables import spelled as spell
from clinicmm.ingest.walk import printable, walk
from clinicmm.keys import Col, Status

NON_SILENT: frozenset[str] = frozenset(NON_SILENT_CLASSES)  # the MAF classes that change the protein
_NON_SILENT_LOWER = frozenset(c.lower() for c in NON_SILENT)
EXPRESSION_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
MUTATION_SUFFIXES = (".maf", ".tsv", ".txt", ".csv", ".parquet")
NONNEGATIVE_UNITS = ("counts", "tpm", "fpkm")
SAMPLE_COLUMNS = [str(c) for c in (Col.PATIENT, Col.SAMPLE, Col.SOURCE, Col.ROW, Col.STATUS, Col.REASON)]
MUTATION_COLUMNS = [
    *SAMPLE_COLUMNS[:2], "gene", "variant_class", "non_silent", *SAMPLE_COLUMNS[2:]
]  # fmt: skip


# ------------------------------------------------------------------------------------------------ shared


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"genomics.patient_id_pattern {pattern!r} is not a valid regex ({exc}). Fix it.") from None


def _patient_of(sample_id: str, pattern: re.Pattern[str] | None) -> str | None:
    """The patient id inside a sample id (first group of the pattern, else the whole match); None: no match."""
    if pattern is None:
        return sample_id
    match = pattern.search(sample_id)
    if match is None:
        return None
    return (match.group(1) if pattern.groups else match.group(0)).strip() or None


def _no_patient(where: str, pattern: re.Pattern[str]) -> str:
    """Why a sample id gives no patient id: too short for patient_id_length, or no match of the pattern."""
    if length := re.fullmatch(r"\^\(\.\{(\d+)\}\)", pattern.pattern):
        return (f"sample id in {where} is shorter than genomics.patient_id_length {length.group(1)}; "
                "fix the sample id or the length")  # fmt: skip
    return (f"sample id in {where} does not match genomics.patient_id_pattern {pattern.pattern!r}; "
            "fix the pattern or the sample id")  # fmt: skip


def _guard_read(path: Path, read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """Run a pandas reader, turning decode/parse failures into InputError naming the file."""
    try:
        return read()
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not valid UTF-8 text (bad byte at offset {exc.start}); tried encoding utf-8. "
            "Re-save the file as UTF-8."
        ) from None
    except pd.errors.EmptyDataError:
        message = f"{path}: the file is empty or holds only a header; it needs a header row and data rows."
        raise InputError(message) from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot be read as a table ({exc}). Check its format and separator.") from None


def _columns_text(columns: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "") if columns else "(none)"


def _missing_column(path: Path, column: str, key: str, columns: list[str]) -> InputError:
    return InputError(
        f"{path}: no column {column!r} (named by {key} in dataset.yaml); the file has columns "
        f"{_columns_text(columns)}. Rename the column or set {key}."
    )


# ------------------------------------------------------------------------------------------- expression


@dataclass
class _Grid:
    """An expression table turned samples x genes, before any sample is judged."""

    name: str  # file name, for messages
    axis: str  # "row" (samples_x_genes) or "column" (genes_x_samples): where a sample sits in the file
    sample_ids: list[str]
    rows: list[int]  # file row (samples_x_genes) or file column (genes_x_samples) of each sample, 1-based
    genes: list[str]
    values: np.ndarray  # float, NaN where missing or not a number
    bad: np.ndarray  # bool: the cell holds something that is not a finite number
    value: Callable[[int, int], object]  # the cell as read of sample i, gene j, for messages
    cell: Callable[[int, int], str]  # "row 3, column 'TP53'" of sample i, gene j
    issues: list[str] = field(default_factory=list)
    feature_genes: dict[str, list[str]] | None = None  # row -> genes, from the table's own gene column (Firehose)
    unread: dict[int, str] = field(default_factory=dict)  # sample -> why its values could not be read (its file)
    sources: list[str] | None = None  # the file of each sample, when each has its own (a GDC download)
    repeated: int = 0  # gene columns (rows) dropped because the same name came earlier
    dropped: int = 0  # gene columns (rows) dropped for any reason so far


def read_expression(
    spec: ExpressionSpec,
    path: Path,
    patient_id_pattern: str | None,
    harmonizer: GeneHarmonizer | None = None,
    drop_unmapped: bool = False,
    key: str = "genomics.expression",
    row_genes: dict[str, list[str]] | None = None,
    roots: list[Path] | None = None,
    follow_outside: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read an expression matrix (or one of ``genomics.layers``, whose config ``key`` messages name): ``(matrix,
    samples)``.

    ``matrix``: index ``sample_id`` (str), columns gene symbols (str), float values (NaN where a cell is empty
    or NA), one row per usable sample; ``matrix.attrs["issues"]`` lists file-level warnings (duplicated or
    unnamed gene columns). ``samples``: one row per sample of the file with the columns of
    :data:`SAMPLE_COLUMNS`; ``row`` is the data row (``samples_x_genes``) or the file column
    (``genes_x_samples``, the gene column being column 1). With a ``harmonizer`` the gene columns are current
    HGNC symbols (``drop_unmapped``: names it cannot resolve are dropped) and ``matrix.attrs["genes"]`` counts
    how each was resolved. ``row_genes``, when given, receives the genes the table itself names for each row
    (Firehose methylation's ``Gene_Symbol`` columns), a probe layer's map when it has no ``feature_map``. With
    ``spec.sample_sheet``, ``path`` is a folder of one file per sample (:mod:`clinicmm.ingest.sample_files`);
    ``roots`` and ``follow_outside`` say where its symbolic links may lead.
    """
    path = Path(path)
    if spec.sample_sheet is not None:
        grid = _sample_files_grid(spec, path, key, roots, follow_outside)
    else:
        grid = _read_grid(spec, path, key)
    grid = _drop_text_features(_dedupe_genes(grid))
    if row_genes is not None and grid.feature_genes:
        row_genes.update(grid.feature_genes)
    counts = {"columns": len(grid.genes) + grid.dropped}
    if harmonizer is not None:
        grid, counts = _harmonize_grid(grid, harmonizer, drop_unmapped, counts)
    pattern = _compile(patient_id_pattern)
    samples = _judge_samples(grid, spec.unit, pattern, key)
    samples[Col.SOURCE] = grid.sources if grid.sources is not None else str(path)
    ok = (samples[Col.STATUS] == Status.OK).to_numpy()
    matrix = pd.DataFrame(
        grid.values[ok],
        index=pd.Index(np.asarray(grid.sample_ids, dtype=object)[ok], name=str(Col.SAMPLE), dtype=str),
        columns=pd.Index(grid.genes, dtype=str),
    )
    matrix.attrs["issues"] = grid.issues
    matrix.attrs["genes"] = counts | {"repeated": grid.repeated, "features": len(grid.genes)}
    return matrix, samples[SAMPLE_COLUMNS]


def expression_by_patient(matrix: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """``matrix`` re-indexed by ``patient_id`` (one usable sample per patient, as :func:`read_expression` keeps)."""
    ok = samples[samples[Col.STATUS] == Status.OK]
    to_patient = dict(zip(ok[Col.SAMPLE], ok[Col.PATIENT], strict=True))
    out = matrix.rename(index=to_patient)
    out.index.name = str(Col.PATIENT)
    out.attrs = dict(matrix.attrs)
    return out


def _read_grid(spec: ExpressionSpec, path: Path, key: str, first_column: bool = False) -> _Grid:
    """``first_column``: a file without ``spec.sample_column`` takes its first column as the sample ids; so does one
    whose first header cell is empty (the row names R's ``write.csv`` and pandas' ``to_csv`` write)."""
    if path.is_dir():
        raise InputError(
            f"{path}: {key}.path is a folder; a folder of one file per sample (a GDC download) needs "
            f"{key}.sample_sheet, the sample sheet that came with it; otherwise point the path at the table's file."
        )
    if getattr(spec, "segments", None):  # a layer of copy-number segments: samples x bands
        return _segments_grid(read_segment_table(path, spec.segments, spec.sample_column, key), path.name)
    fmt = table_format(path, EXPRESSION_SUFFIXES, f"{key}.path")
    header, body = _read_parquet(path) if fmt == ".parquet" else (_read_header(path, fmt), None)
    if looks_like_segments(header):
        where = (
            f"set {key}.segments"
            if key.startswith("genomics.layers")
            else "read it as a genomics.layers entry with segments"
        )
        raise InputError(
            f"{path}: {key} looks like a copy-number segment table (a row per segment, with chromosome, start and end "
            f"columns), not a matrix; {where}: hg38 for the GDC's files, hg19 for cBioPortal's and Firehose's, to "
            "read each sample's segments as cytogenetic band values."
        )
    unnamed = spec.orientation == "samples_x_genes" and spec.sample_column not in header and header[:1] == [""]
    text_column = _text_column(spec, path, header, key, first_column or unnamed)
    layout = None
    if spec.orientation == "genes_x_samples":
        second = _second_row(path, fmt) if body is None else [_cell_text(v) for v in body.iloc[0]] if len(body) else []
        layout = _quantity_layout(path, header, second, spec.quantity, key)
    if body is None:
        body = _read_body(path, fmt, text_column, len(header), layout)
    elif layout is not None:
        body = body.iloc[1:, layout.read].reset_index(drop=True)
    body[text_column] = body[text_column].map(_cell_text)
    if spec.orientation == "genes_x_samples":
        return _genes_by_samples(path, header, body, layout)
    grid = _samples_by_genes(path, header, body, text_column)
    if unnamed and not first_column:
        grid.issues.append(
            f"{path.name}: no {spec.sample_column!r} column; its unnamed first column read as the sample ids (as R's "
            f"write.csv and pandas' to_csv write row names); set {key}.sample_column to read another"
        )
    return grid


def _segments_grid(read: SegmentValues, name: str) -> _Grid:
    """The grid of a segment table's band values (every cell a mean computed here: none is bad)."""
    return _Grid(
        name=name,
        axis="row",
        sample_ids=read.sample_ids,
        rows=read.rows,
        genes=read.bands,
        values=read.values,
        bad=np.zeros(read.values.shape, dtype=bool),
        value=lambda i, j: read.values[i, j],
        cell=lambda i, j: f"{name}, the sample at row {read.rows[i]}, band {read.bands[j]}",
        issues=read.issues,
        unread=read.reasons,
    )


def _sample_files_grid(
    spec: ExpressionSpec, folder: Path, key: str, roots: list[Path] | None, follow_outside: bool
) -> _Grid:
    """The grid of a folder of one file per sample, named by a GDC sample sheet."""
    sheet = Path(spec.sample_sheet)
    read = read_sample_files(
        folder, sheet, spec.unit, spec.quantity, key, roots, follow_outside, getattr(spec, "segments", None)
    )
    names = [Path(p).name if p else "" for p in read.sources]
    return _Grid(
        name=sheet.name,
        axis="row",
        sample_ids=read.sample_ids,
        rows=read.rows,
        genes=read.features,
        values=read.values,
        bad=read.bad,
        value=lambda i, j: read.raw.get((i, j), read.values[i, j]),
        cell=lambda i, j: f"{names[i]}, the row of {read.features[j]!r}",
        issues=read.issues,
        unread=read.reasons,
        sources=[p or str(folder) for p in read.sources],
    )


def _text_column(spec: ExpressionSpec, path: Path, header: list[str], key: str, first_column: bool = False) -> int:
    """Position of the column read as text: the sample ids, or the gene symbols for ``genes_x_samples``."""
    if spec.orientation == "genes_x_samples" or (first_column and spec.sample_column not in header):
        return 0
    if spec.sample_column not in header:
        raise _missing_column(path, spec.sample_column, f"{key}.sample_column", header)
    return header.index(spec.sample_column)


def _read_parquet(path: Path) -> tuple[list[str], pd.DataFrame]:
    """Header and cells (integer column labels) of a parquet table; a stored pandas index becomes a column (an
    unnamed one is named '', the header text tables give it)."""
    table = _guard_read(path, lambda: pd.read_parquet(path))
    if not isinstance(table.index, pd.RangeIndex) or table.index.name is not None:
        table = table.rename_axis(table.index.name or "").reset_index()  # unnamed: '' as a text table writes it
    header = [str(c).strip() for c in table.columns]
    table.columns = range(table.shape[1])
    return header, table


def _read_header(path: Path, fmt: str) -> list[str]:
    """The header row of a text table exactly as written (duplicated names kept)."""
    first = first_rows(path, separator(fmt), 1)
    if not first or not first[0]:
        raise InputError(f"{path}: the file is empty; it needs a header row and data rows.")
    return [c.strip() for c in first[0]]


@dataclass
class _Layout:
    """A genes x samples table with several columns per sample, named by a second header row (Firehose)."""

    columns: list[int]  # file columns of the quantity read, one per sample
    genes: int | None  # the first Gene_Symbol column: each row's genes (a probe table's own map)
    issue: str

    @property
    def read(self) -> list[int]:
        """The file columns read: the row names, the quantity's, the gene column."""
        return [0, *self.columns, *([] if self.genes is None else [self.genes])]


# what a second header row's quantities are read first, when the workflow names none (Firehose's methylation,
# normalised RSEM and miRNA tables)
PREFERRED_QUANTITIES = ("beta_value", "normalized_count", "reads_per_million_mirna_mapped")
GENE_QUANTITIES = ("gene_symbol", "gene", "gene_name", "symbol")


def _cell_text(value: object) -> str:
    return "" if pd.isna(value) else str(value).strip()


def _second_row(path: Path, fmt: str) -> list[str]:
    rows = first_rows(path, separator(fmt), 2)
    return [c.strip() for c in rows[1]] if len(rows) > 1 else []


def _quantity_layout(
    path: Path, header: list[str], second: list[str], quantity: str | None, key: str
) -> _Layout | None:
    """Firehose's layout: each sample id repeated over several columns whose second header row names what each
    holds (``Beta_value``, ``Gene_Symbol``, ``Chromosome``, ``Genomic_Coordinate``). None for any other table."""
    if len(second) != len(header) or len(header) < 3 or len(set(header[1:])) == len(header) - 1:
        return None
    if any(is_number(c) for c in second[1:]):
        return None  # a data row, not a row of names
    spelled = [spell(c) for c in second]
    names = list(dict.fromkeys(second[1:]))
    if quantity is not None:
        chosen = spell(quantity)
        if chosen not in spelled[1:]:
            raise InputError(
                f"{path}: {key}.quantity {quantity!r} is not in the second header row, which names "
                f"{_columns_text(names, 8)}; set {key}.quantity to one of them."
            )
    else:
        chosen = next((q for q in PREFERRED_QUANTITIES if q in spelled[1:]), spelled[1])
    columns = [j for j in range(1, len(header)) if spelled[j] == chosen]
    genes = next((j for j in range(1, len(header)) if spelled[j] in GENE_QUANTITIES), None)
    shown = second[columns[0]]
    issue = (
        f"{path.name}: {len(names)} columns per sample under a second header row ({_columns_text(names, 6)}): read "
        f"{shown!r}, one column per sample, the others left out (set {key}.quantity to read another)"
        + (f"; its {second[genes]!r} column names each row's genes" if genes is not None else "")
    )
    return _Layout(columns, genes, issue)


def _read_body(path: Path, fmt: str, text_column: int, width: int, layout: _Layout | None = None) -> pd.DataFrame:
    """The data cells with integer column labels: numbers parsed, NA tokens missing, ``text_column`` as str.
    With a ``layout`` only its columns, below its second header row."""
    columns = None if layout is None else layout.read
    body = _guard_read(
        path,
        lambda: pd.read_csv(
            path, sep=separator(fmt), header=None, skiprows=1 if layout is None else 2, usecols=columns,
            names=None if layout is None else range(width),
            dtype={text_column: str} | ({layout.genes: str} if layout and layout.genes else {}),
            keep_default_na=False, na_values=NA_TOKENS, encoding="utf-8-sig",
        ),
    )  # fmt: skip
    if layout is not None:
        return body
    if body.shape[1] != width:
        raise InputError(
            f"{path}: the header has {width} columns but the data rows have {body.shape[1]}; "
            "check the separator and that every row has one value per column."
        )
    return body


def _samples_by_genes(path: Path, header: list[str], body: pd.DataFrame, sample_pos: int) -> _Grid:
    gene_pos = [j for j in range(len(header)) if j != sample_pos]
    raw = body.drop(columns=sample_pos)
    values, bad = cell_numbers(raw)
    genes = [header[j] for j in gene_pos]
    return _Grid(
        name=path.name,
        axis="row",
        sample_ids=list(body[sample_pos]),
        rows=list(range(1, len(body) + 1)),
        genes=genes,
        values=values,
        bad=bad,
        value=lambda i, j: raw.iat[i, j],
        cell=lambda i, j: f"{path.name} row {i + 1}, column {genes[j]!r}",
    )


# gene annotation columns beside the gene names of a genes x samples table (cBioPortal's Entrez_Gene_Id, GISTIC's
# Locus ID and Cytoband, GCT's Description, GDC's gene_name and gene_type): not samples
ANNOTATION_COLUMNS = frozenset({"entrez_gene_id", "entrez_id", "entrez", "locus_id", "gene_id", "gene_name",
                                "gene_symbol", "hugo_symbol", "gene_type", "cytoband", "description"})  # fmt: skip


def _genes_by_samples(path: Path, header: list[str], body: pd.DataFrame, layout: _Layout | None = None) -> _Grid:
    spelled = [spell(h) for h in header]
    if layout is not None:  # Firehose: the quantity's columns only, below the second header row
        sample_pos, issues, first_row = layout.columns, [layout.issue], 2
    else:
        sample_pos = [j for j in range(1, len(header)) if spelled[j] not in ANNOTATION_COLUMNS]
        annotation = [repr(header[j]) for j in range(1, len(header)) if spelled[j] in ANNOTATION_COLUMNS]
        issues = [f"{path.name}: column(s) {', '.join(annotation)} read as gene annotation beside the gene names, "
                  "not as samples"] if annotation else []  # fmt: skip
        first_row = 1
    raw = body[sample_pos]
    values, bad = cell_numbers(raw)
    gene_rows = list(range(first_row, len(body) + first_row))
    samples = [header[j] for j in sample_pos]
    return _Grid(
        name=path.name,
        axis="column",
        sample_ids=samples,
        rows=[j + 1 for j in sample_pos],
        genes=list(body[0]),
        values=values.T.copy(),
        bad=bad.T.copy(),
        value=lambda i, j: raw.iat[j, i],
        cell=lambda i, j: f"{path.name} row {gene_rows[j]}, column {samples[i]!r}",
        issues=issues,
        feature_genes=None
        if layout is None or layout.genes is None
        else gene_table(list(body[0]), list(body[layout.genes])),
    )


def _dedupe_genes(grid: _Grid) -> _Grid:
    """Keep the first column (row) of each gene symbol and drop unnamed ones, recording both in ``grid.issues``."""
    kind = "column" if grid.axis == "row" else "row"  # genes run across the samples' axis
    counts = pd.Series(grid.genes, dtype=object).value_counts(sort=False)
    first = pd.Series(range(len(grid.genes)), index=grid.genes).groupby(level=0, sort=False).first()
    keep = sorted(int(j) for gene, j in first.items() if gene)
    for gene, n in counts[counts > 1].items():
        if gene:
            grid.issues.append(f"{grid.name}: gene {kind} {gene!r} appears {n} times; kept the first")
    if "" in counts.index:
        grid.issues.append(f"{grid.name}: {counts['']} gene {kind}(s) without a gene symbol; ignored them")
    grid.repeated = int((counts[counts.index != ""] - 1).sum())
    return _keep_genes(grid, keep, [grid.genes[j] for j in keep])


def _drop_text_features(grid: _Grid) -> _Grid:
    """Leave out gene columns (rows) that hold text in two or more samples and a number in none: a second header row
    (Firehose's ``gene_id / normalized_count`` under ``Hybridization REF``) or an annotation column (sample type,
    sex) beside the genes, not a measurement; kept, each would skip every sample. Named in ``grid.issues``. A
    single sample's text cell skips that sample, as any bad cell does (a one-patient table to predict keeps its
    genes)."""
    text = (grid.bad.sum(axis=0) >= 2) & ~np.isfinite(grid.values).any(axis=0)  # one sample's typo skips it
    if not text.any():
        return grid
    kind = "column" if grid.axis == "row" else "row"
    names = [grid.genes[j] for j in np.flatnonzero(text)]
    shown = ", ".join(map(repr, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    grid.issues.append(
        f"{grid.name}: {len(names)} {kind}(s) hold text and no number in any sample ({shown}): read as "
        f"{'annotation columns' if kind == 'column' else 'header rows'}, not genes, and left out"
    )
    keep = [j for j in range(len(grid.genes)) if not text[j]]
    return _keep_genes(grid, keep, [grid.genes[j] for j in keep])


def _keep_genes(grid: _Grid, keep: list[int], names: list[str]) -> _Grid:
    """Only the gene columns ``keep`` (positions), renamed ``names``; messages still name the file's cells."""
    old_cell, old_value = grid.cell, grid.value
    grid.dropped += len(grid.genes) - len(keep)
    grid.genes = list(names)
    grid.values, grid.bad = grid.values[:, keep], grid.bad[:, keep]
    grid.cell = lambda i, j: old_cell(i, keep[j])
    grid.value = lambda i, j: old_value(i, keep[j])
    return grid


def _harmonize_grid(grid: _Grid, harmonizer: GeneHarmonizer, drop_unmapped: bool, counts: dict) -> tuple[_Grid, dict]:
    """Current HGNC symbols for the gene columns (rows); repeats after renaming and, on request, unresolved
    names are dropped. Counts and readable lines go to the ingest report."""
    kind = "column" if grid.axis == "row" else "row"
    result = harmonizer.harmonize(grid.genes)
    keep = [j for j in result.keep if not (drop_unmapped and result.how[j] in ("unmapped", "ambiguous"))]
    grid.issues += summary_lines(grid.name, kind, result)
    dropped = len(result.keep) - len(keep)
    if dropped:
        grid.issues.append(f"{grid.name}: dropped {dropped} unresolved gene {kind}(s) (genomics.genes.unmapped: drop)")
    counts = counts | {k: v for k, v in result.counts().items() if k != "kept"} | {"dropped_unmapped": dropped}
    return _keep_genes(grid, keep, [result.names[j] for j in keep]), counts


def _judge_samples(grid: _Grid, unit: str, pattern: re.Pattern[str] | None, key: str) -> pd.DataFrame:
    """Status and reason per sample: empty or repeated id, pattern mismatch, bad values, another sample of the same
    patient kept (a TCGA tumour sample before a normal-tissue one, else the first in file order)."""
    patients, reasons, first_id = [], [], {}
    for i, sample_id in enumerate(grid.sample_ids):
        patients.append(_patient_of(sample_id, pattern) if sample_id else None)
        reasons.append(_sample_reason(grid, i, unit, pattern, first_id.get(sample_id), key))
        first_id.setdefault(sample_id, grid.rows[i])
    types = [sample_type(sample_id) for sample_id in grid.sample_ids]
    kept: dict[str, int] = {}  # patient -> the sample kept: the lowest TCGA sample type, then file order
    for i in sorted(range(len(patients)), key=lambda i: (type_rank(grid.sample_ids[i]), i)):
        if not reasons[i]:
            kept.setdefault(patients[i], i)
    for i, patient in enumerate(patients):
        if reasons[i] or kept[patient] == i:
            continue
        other, where = kept[patient], f"{grid.name} {grid.axis}"
        if types[i] is not None and types[other] is not None and types[i] != types[other]:
            reasons[i] = (
                f"sample in {where} {grid.rows[i]} is a {type_words(types[i])} of the same patient as the "
                f"{type_words(types[other])} in {grid.axis} {grid.rows[other]}, which is kept (one expression sample "
                "per patient: the lowest TCGA sample type, tumours 01-09 first)"
            )
        else:
            reasons[i] = (
                f"sample in {where} {grid.rows[i]} belongs to the same patient as the sample in {grid.axis} "
                f"{grid.rows[other]}; kept {'the first' if other < i else 'that one'} (one expression sample per patient)"
            )
    normal = sum(1 for i in kept.values() if types[i] is not None and types[i][0] == 1)
    if normal:
        grid.issues.append(
            f"{grid.name}: {normal} patient(s) have only a normal-tissue sample here (TCGA sample types 10-19), kept "
            "as their values; they describe normal tissue, not a tumour"
        )
    rows = [{Col.PATIENT: patient or "", Col.SAMPLE: sample_id, Col.ROW: row,
             Col.STATUS: Status.SKIPPED.value if reason else Status.OK.value, Col.REASON: reason}
            for patient, sample_id, row, reason in zip(patients, grid.sample_ids, grid.rows, reasons, strict=True)]  # fmt: skip
    out = pd.DataFrame(rows, columns=[Col.PATIENT, Col.SAMPLE, Col.ROW, Col.STATUS, Col.REASON])
    out.columns = [str(c) for c in out.columns]
    return out.astype({str(Col.ROW): "int64"})


def _sample_reason(
    grid: _Grid, i: int, unit: str, pattern: re.Pattern[str] | None, repeats: int | None, key: str
) -> str:
    where = f"{grid.name} {grid.axis} {grid.rows[i]}"
    sample_id = grid.sample_ids[i]
    if i in grid.unread:
        return grid.unread[i]
    if not sample_id:
        return f"empty sample id in {where}; fill it or remove the sample"
    if repeats is not None:
        return f"sample id in {where} repeats {grid.axis} {repeats}; kept the first, give each sample its own id"
    if _patient_of(sample_id, pattern) is None:
        return _no_patient(where, pattern)
    return _value_reason(grid, i, unit, key)


def _value_reason(grid: _Grid, i: int, unit: str, key: str) -> str:
    bad = np.flatnonzero(grid.bad[i])
    if bad.size:
        j = int(bad[0])
        what = "an infinite value" if np.isinf(pd.to_numeric(str(grid.value(i, j)), errors="coerce")) else "text"
        return (f"{grid.cell(i, j)}: {what}, not a finite number (the cell is not shown: it may hold anything); "
                "fix it or leave the cell empty (NA)")  # fmt: skip
    if unit in NONNEGATIVE_UNITS:
        negative = np.flatnonzero(grid.values[i] < 0)
        if negative.size:
            j = int(negative[0])
            return (
                f"{grid.cell(i, j)}: negative value {grid.values[i, j]:g} but {key}.unit is "
                f"{unit!r}; fix the value or set the unit to 'log' or 'normalized'"
            )
    if grid.values.shape[1] and np.isnan(grid.values[i]).all():
        return f"{grid.name} {grid.axis} {grid.rows[i]}: the sample has no expression values; fill them or remove it"
    return ""


# -------------------------------------------------------------------------------------------- mutations


def read_mutations(
    spec: MutationsSpec,
    path: Path,
    patient_id_pattern: str | None,
    harmonizer: GeneHarmonizer | None = None,
    drop_unmapped: bool = False,
    roots: list[Path] | None = None,
    follow_outside: bool = False,
) -> pd.DataFrame:
    """Read a mutation list (MAF: tab-separated, leading ``#`` comment lines allowed), or every MAF of a folder (a
    GDC download: one ``*.maf.gz`` per case; ``roots`` / ``follow_outside`` say where its links may lead).

    One row per data row with the columns of :data:`MUTATION_COLUMNS`; ``non_silent`` is True for the MAF
    classes in :data:`NON_SILENT` (matched case-insensitively); ``row`` is the data row of its file (comments and
    header excluded). Rows without a sample id or gene, or whose sample id does not match the pattern, are skipped;
    a folder's MAF that cannot be read is one skipped row (row 0) with the reason, and the others are read.
    With a ``harmonizer`` genes are current HGNC symbols (``attrs["genes"]``: counts over distinct names);
    ``drop_unmapped`` skips rows whose gene it cannot resolve, with the reason.
    """
    path = Path(path)
    pattern = _compile(patient_id_pattern)
    if spec.format == "matrix":
        out, bad = _read_mutation_matrix(spec, path, pattern)
    elif path.is_dir():
        out, bad = _read_mutation_folder(spec, path, roots, follow_outside)
    else:
        out, bad = _mutation_rows(spec, _read_mutation_table(spec, path), path), {}
    names = [Path(source).name for source in out["source"]]
    out["patient_id"] = [(_patient_of(s, pattern) or "") if s else "" for s in out["sample_id"]]
    unresolved = _harmonize_mutations(out, harmonizer, path.name) if harmonizer is not None else set()
    reasons = [bad.get(i) or _mutation_reason(r, pattern, names[i]) for i, r in enumerate(out.itertuples(index=False))]
    if drop_unmapped:
        reasons = [r or (f"gene {g!r} in {name} row {n} is not an HGNC symbol or id the gene table resolves; "
                         "skipped (genomics.genes.unmapped: drop)" if g in unresolved else "")
                   for r, g, n, name in zip(reasons, out["gene"], out["row"], names, strict=True)]  # fmt: skip
    reasons = _one_tumour_sample(out, reasons, names)
    out["status"] = [Status.SKIPPED.value if r else Status.OK.value for r in reasons]
    out["reason"] = reasons
    result = out[MUTATION_COLUMNS]
    result.attrs = dict(out.attrs)
    return result


def _mutation_rows(spec: MutationsSpec, raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The named columns of one mutation table as the rows of :func:`read_mutations` (before they are judged)."""
    samples = raw[spec.sample_column].str.strip()
    classes = raw[spec.class_column].str.strip()
    return pd.DataFrame(
        {
            "patient_id": "",
            "sample_id": samples.to_numpy(),
            "gene": raw[spec.gene_column].str.strip().to_numpy(),
            "variant_class": classes.to_numpy(),
            "non_silent": classes.str.lower().isin(_NON_SILENT_LOWER).to_numpy(dtype=bool),
            "source": str(path),
            "row": np.arange(1, len(raw) + 1, dtype="int64"),
        }
    )


MAF_NAMES = (".maf", ".maf.gz")  # what a folder of mutation files is read for (not its annotations.txt, logs)


def _read_mutation_folder(
    spec: MutationsSpec, folder: Path, roots: list[Path] | None, follow_outside: bool
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Every MAF under ``folder``, one after another; a file that cannot be read becomes one skipped row."""
    walked = walk(folder, roots if roots is not None else [folder], follow_outside)
    files = [Path(f) for f in walked.files if f.lower().endswith(MAF_NAMES)]
    if not files:
        raise InputError(
            f"{folder}: genomics.mutations.path is a folder without MAF files ({', '.join(MAF_NAMES)}); point it at "
            "a MAF, or at the folder of a GDC download of masked somatic mutations."
        )
    parts, failed = [], []
    for file in tqdm(files, desc="Reading MAF files", unit="file", file=sys.stderr,
                     disable=None if len(files) >= PROGRESS_MIN_FILES else True):  # fmt: skip
        try:
            parts.append(_mutation_rows(spec, _read_mutation_table(spec, file), file))
        except InputError as exc:
            failed.append((file, str(exc).removeprefix(f"{file}: ")))
    skipped = pd.DataFrame({"patient_id": "", "sample_id": "", "gene": "", "variant_class": "", "non_silent": False,
                            "source": [str(f) for f, _ in failed], "row": np.zeros(len(failed), dtype="int64")})  # fmt: skip
    out = pd.concat([*parts, skipped], ignore_index=True) if parts else skipped
    start = len(out) - len(failed)
    bad = {start + k: f"{printable(f.name)} under {folder.name}: {why}" for k, (f, why) in enumerate(failed)}
    out.attrs["issues"] = [
        f"{folder.name}: {len(files) - len(failed)} of {len(files)} MAF files read"
        + (f" ({len(failed)} could not be, see the skipped inputs)" if failed else "")
    ] + [f"{printable(Path(p).name)} under {folder.name}: {why}" for p, why in walked.skipped]
    return out, bad


def _one_tumour_sample(out: pd.DataFrame, reasons: list[str], names: list[str]) -> list[str]:
    """Of a patient's TCGA samples, only the mutations of the lowest sample type are used (a primary tumour -01
    before its metastasis -06), as the expression tables keep that sample; other ids and aliquots of one type stay."""
    types = [sample_type(sample) for sample in out["sample_id"]]
    best: dict[str, tuple[int, int]] = {}
    for patient, kind, reason in zip(out["patient_id"], types, reasons, strict=True):
        if kind is not None and not reason:
            best[patient] = min(best.get(patient, kind), kind)
    return [
        reason or (f"{name} row {row}: a mutation of the patient's {type_words(kind)}, whose "
                   f"{type_words(best[patient])} is used (one tumour sample per patient, as in the expression "
                   "tables)" if kind is not None and kind != best[patient] else "")
        for patient, kind, reason, row, name in zip(out["patient_id"], types, reasons, out["row"], names, strict=True)
    ]  # fmt: skip


NOT_MUTATED = frozenset({"", "0", "0.0", "false", "no", "n", "wt", *(t.lower() for t in NA_TOKENS)})
MUTATED_WORDS = frozenset({"1", "1.0", "true", "yes", "y"})


def _mutated(value: str) -> bool | None:
    """A mutation-matrix cell: True (1, a count > 0, true, yes), False (0, blank, NA, false, no, WT), None otherwise."""
    word = value.strip().lower()
    if word in NOT_MUTATED or word in MUTATED_WORDS:
        return word in MUTATED_WORDS
    try:
        number = float(word)
    except ValueError:
        return None
    return None if number != number or number < 0 else number > 0


def _read_mutation_matrix(
    spec: MutationsSpec, path: Path, pattern: re.Pattern[str] | None
) -> tuple[pd.DataFrame, dict[int, str]]:
    """``format: matrix``: one row per sample, one column per gene, read by the expression tables' reader (a repeated
    or unnamed gene column reported there); a row of :data:`MUTATION_COLUMNS` per mutated cell (no class,
    ``non_silent``) and ``{row index: reason}`` for cells that say neither 0 nor 1 (skipped). ``attrs["measured"]``:
    every patient of the matrix, a row of zeros being a patient measured without mutations, not one unmeasured."""
    grid = _read_grid(ExpressionSpec(path=path, sample_column=spec.sample_column), path, "genomics.mutations", True)
    grid = _dedupe_genes(grid)
    if not grid.genes:
        raise InputError(f"{path}: genomics.mutations (format: matrix) needs a sample id column and one column per "
                         "gene; found no gene column. Check the separator or use format: maf.")  # fmt: skip
    mutated, unread = grid.values > 0, grid.values < 0  # numbers: a count; missing (NaN) is no mutation
    for i, j in zip(*np.nonzero(grid.bad), strict=True):  # words (true, yes, WT ...): read one by one
        state = _mutated(str(grid.value(i, j)))
        mutated[i, j], unread[i, j] = state is True, state is None
    records, bad = [], {}
    for j, i in zip(*np.nonzero((mutated | unread).T), strict=True):  # gene by gene, as a MAF sorted by gene
        if unread[i, j]:
            bad[len(records)] = (f"{grid.cell(i, j)}: not 0 or 1 (or a count); write 1 for a gene with a non-silent "
                                 "mutation, 0 or blank for none; skipped")  # fmt: skip
        records.append((grid.sample_ids[i], grid.genes[j], grid.rows[i]))
    out = pd.DataFrame(records, columns=["sample_id", "gene", "row"]).astype({"row": "int64"})
    out.insert(0, "patient_id", "")
    out["variant_class"], out["non_silent"], out["source"] = "", True, str(path)
    out = out[["patient_id", "sample_id", "gene", "variant_class", "non_silent", "source", "row"]]
    measured = {_patient_of(sample, pattern) or "" for sample in grid.sample_ids if sample} - {""}
    out.attrs = {"measured": sorted(measured), "issues": list(grid.issues)}
    return out, bad


def _harmonize_mutations(out: pd.DataFrame, harmonizer: GeneHarmonizer, name: str) -> set[str]:
    """Rename ``out["gene"]`` in place to current symbols; returns the names left unresolved."""
    names = [g for g in dict.fromkeys(out["gene"]) if g]
    result = harmonizer.harmonize(names)
    mapping = dict(zip(names, result.names, strict=True))
    out["gene"] = out["gene"].map(lambda g: mapping.get(g, g))
    counts = result.counts()
    out.attrs["genes"] = {"names": counts.pop("genes"), **{k: v for k, v in counts.items() if k != "kept"}}
    out.attrs["issues"] = out.attrs.get("issues", []) + summary_lines(name, "name", result)
    return {n for n, h in zip(names, result.how, strict=True) if h in ("unmapped", "ambiguous")}


def _mutation_reason(row: tuple, pattern: re.Pattern[str] | None, name: str) -> str:
    where = f"{name} row {row.row}"
    if not row.sample_id:
        return f"empty sample id in {where}; fill it or remove the row"
    if not row.gene:
        return f"empty gene symbol in {where}; fill it or remove the row"
    if not row.patient_id:
        return _no_patient(where, pattern)
    return ""


def _read_mutation_table(spec: MutationsSpec, path: Path) -> pd.DataFrame:
    """The three named columns as strings; checks they exist first."""
    fmt = table_format(path, MUTATION_SUFFIXES, "genomics.mutations.path")
    wanted = {
        "genomics.mutations.sample_column": spec.sample_column,
        "genomics.mutations.gene_column": spec.gene_column,
        "genomics.mutations.class_column": spec.class_column,
    }
    if fmt == ".parquet":
        table = _guard_read(path, lambda: pd.read_parquet(path))
        table.columns = [str(c) for c in table.columns]
        _check_columns(path, wanted, list(table.columns))
        cols = list(dict.fromkeys(wanted.values()))
        return table[cols].map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else str(v))
    options = dict(
        sep=separator(fmt), skiprows=comment_lines(path), dtype=str, keep_default_na=False, encoding="utf-8-sig"
    )
    header = _guard_read(path, lambda: pd.read_csv(path, nrows=0, **options))
    _check_columns(path, wanted, [str(c) for c in header.columns])
    return _guard_read(path, lambda: pd.read_csv(path, usecols=list(dict.fromkeys(wanted.values())), **options))


def _check_columns(path: Path, wanted: dict[str, str], columns: list[str]) -> None:
    for key, column in wanted.items():
        if column not in columns:
            raise _missing_column(path, column, key, columns)


# ---------------------------------------------------------------------------------------------- dataset


def _with_sheet(table: ExpressionSpec, spec: DatasetSpec) -> ExpressionSpec:
    """``table`` with its sample sheet's path resolved against the dataset YAML's folder."""
    if table.sample_sheet is None:
        return table
    return table.model_copy(update={"sample_sheet": spec.resolve(table.sample_sheet)})


def read_genomics(
    spec: DatasetSpec, roots: list[Path] | None = None, follow_outside: bool = False
) -> dict[str, pd.DataFrame | None]:
    """The dataset's genomics tables for ingest: ``expression`` (by patient), ``samples``, ``mutations``.

    One gene table serves both files (``genomics.genes``); the sample -> patient rule is
    ``genomics.patient_id_pattern`` or ``genomics.patient_id_length``. ``roots`` / ``follow_outside``: where the
    symbolic links of a folder of sample files may lead (the dataset's folders; default: that folder).
    """
    g = spec.genomics
    names = g.genes
    table = spec.resolve(names.hgnc_table) if names.hgnc_table is not None else None
    harmonizer = harmonizer_for(table) if names.harmonize else None
    drop = names.unmapped == "drop"
    pattern = g.sample_pattern()
    out: dict[str, pd.DataFrame | None] = {}
    matrices, sample_tables = [], []
    if g.expression:
        expression, key = _with_sheet(g.expression, spec), "genomics.expression"
        where = spec.resolve(g.expression.path)
        matrix, samples = read_expression(
            expression, where, pattern, harmonizer, drop, key, None, roots, follow_outside
        )
        matrices.append(expression_by_patient(matrix, samples))
        sample_tables.append(samples)
    for i, layer in enumerate(g.layers):
        key = f"genomics.layers[{i}]"
        matrix, samples = read_layer(layer, spec, pattern, harmonizer, drop, key, roots, follow_outside)
        matrices.append(matrix)
        sample_tables.append(samples)
    if matrices:
        out["expression"], out["samples"] = join_layers(matrices), pd.concat(sample_tables, ignore_index=True)
    if g.mutations:
        out["mutations"] = read_mutations(
            g.mutations, spec.resolve(g.mutations.path), pattern, harmonizer, drop, roots, follow_outside
        )
    return out


# ----------------------------------------------------------------------------------------------- layers

LAYER_SEPARATOR = ":"  # a layer's columns are "<layer name>:<feature>"; HGNC symbols never hold a colon


def read_layer(
    layer,
    spec: DatasetSpec,
    pattern: str | None,
    harmonizer: GeneHarmonizer | None,
    drop: bool,
    key: str,
    roots: list[Path] | None = None,
    follow_outside: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One ``genomics.layers`` table by patient, its columns ``<name>:<feature>``: gene names harmonised
    (``features: gene``), probes averaged per gene through ``feature_map`` (``features: probe``), miRNA names and
    arm / band names (``features: cytoband``, counted: ``regions``) kept.
    ``attrs["genes"]`` counts the layer's features, ``attrs["issues"]`` its readable lines."""
    path = spec.resolve(layer.path)
    # a protein table's antibodies are not renamed: a gene's total and phospho forms (cBioPortal's EGFR|EGFR and
    # EGFR|EGFR_pY1068) are distinct measurements, which renaming to one symbol would drop as repeats; each still
    # links to its gene through its current HGNC symbol (clinicmm.encode.genomics.link_gene)
    gene_names = harmonizer if layer.features == "gene" and layer.kind != "protein" else None
    row_genes: dict[str, list[str]] = {}
    matrix, samples = read_expression(
        _with_sheet(layer, spec),
        path,
        pattern,
        gene_names,
        drop and gene_names is not None,
        key,
        row_genes,
        roots,
        follow_outside,
    )
    matrix = expression_by_patient(matrix, samples)
    counts = dict(matrix.attrs.get("genes", {})) | {"features": matrix.shape[1]}
    issues = list(matrix.attrs.get("issues", []))
    table, source = None, ""
    if layer.feature_map is not None:
        map_path = spec.resolve(layer.feature_map)
        read = read_feature_map(map_path, f"{key}.feature_map")
        table, source = read.genes, map_path.name
        issues.append(read.note)
    elif layer.features == "probe" and row_genes:
        table, source = row_genes, f"{path.name}'s own gene column"
    elif layer.features == "probe":
        raise InputError(
            f"{path}: {key} has features: probe but no feature_map, and the table names no gene per probe (as "
            f"Firehose's Gene_Symbol columns do); set {key}.feature_map to a probe -> gene table: an Illumina "
            "manifest as downloaded, a GEO platform table, a UCSC Xena probeMap or a CSV of probe and gene(s). "
            "clinicmm ships no probe annotation."
        )
    if table is not None:
        matrix, mapped = map_features(matrix, table)
        counts |= {
            "mapped": mapped,
            "unmapped": counts["features"] - mapped,
            "genes": int(matrix.shape[1] - (counts["features"] - mapped)),
        }
        if counts["unmapped"]:
            issues.append(
                f"{path.name}: {counts['unmapped']} of {counts['features']} {layer.name} features are not in "
                f"{source}; kept as features, they link to no gene"
            )
    bands = sum(parse_band(c) is not None for c in matrix.columns)
    if layer.features == "cytoband":
        counts["regions"] = bands
        if counts["regions"] < counts["features"]:
            issues.append(
                f"{path.name}: {counts['features'] - counts['regions']} of {counts['features']} {layer.name} columns "
                "name no chromosome arm or band (1p, 8q, chr8q, 8q24.21; whole chromosomes and ranges are not read); "
                "kept as features, they link to no gene"
            )
    elif bands and 2 * bands >= counts["features"]:  # an arm-level table declared as genes: it would link nothing
        issues.append(
            f"{path.name}: {bands} of {counts['features']} {layer.name} columns name chromosome arms or bands (1p, "
            f"8q, 8q24.21) yet the layer says features: {layer.features}, so they link to no gene; write "
            f"'features: cytoband' on layer {layer.name!r} for the graph models to pool each through the genes inside"
        )
    matrix = matrix.add_prefix(layer.name + LAYER_SEPARATOR)
    matrix.attrs = {"genes": {f"{layer.name}_{k}": v for k, v in counts.items()}, "issues": issues,
                    "units": {layer.name: layer.unit}}  # fmt: skip
    return matrix, samples


def join_layers(matrices: list[pd.DataFrame]) -> pd.DataFrame:
    """The expression matrix and the layers side by side (outer join on patient: a patient missing from one
    table has NaN there, which the encoder reads as the training mean); attrs merged."""
    if len(matrices) == 1:
        return matrices[0]
    out = pd.concat(matrices, axis=1, join="outer", sort=False)
    out.index.name = str(Col.PATIENT)
    out.attrs = {"issues": [line for m in matrices for line in m.attrs.get("issues", [])],
                 "genes": {k: v for m in matrices for k, v in m.attrs.get("genes", {}).items()},
                 "units": {k: v for m in matrices for k, v in m.attrs.get("units", {}).items()}}  # fmt: skip
    return out


def genomics_issues(tables: dict[str, pd.DataFrame | None]) -> list[str]:
    """The readable file-level lines of the genomics tables (repeated columns, gene harmonisation, layers)."""
    return [line for name in ("expression", "mutations") if tables.get(name) is not None
            for line in tables[name].attrs.get("issues", [])]  # fmt: skip


def gene_counts(tables: dict[str, pd.DataFrame | None]) -> dict[str, dict[str, int]]:
    """Per genomics table, how its gene names were resolved (counts only, for the report and MLflow)."""
    return {name: dict(tables[name].attrs["genes"]) for name in ("expression", "mutations")
            if tables.get(name) is not None and "genes" in tables[name].attrs}  # fmt: skip
