"""Feature -> gene maps (``genomics.layers[].feature_map``) read as they are published, and probes averaged per gene.

A probe table links to the graph only through such a map, and the maps people have are downloads, not two-column
extracts:

* an **Illumina manifest** as downloaded (450k, EPIC): a ``[Heading]`` section above the header, the probe in
  ``IlmnID`` (EPIC v2: ``cg00000029_TC21``) and ``Name`` (``cg00000029``), the genes in ``UCSC_RefGene_Name``
  (``RBL2;RBL2``, one per transcript), and a ``[Controls]`` section below the probes;
* a **GEO platform table** (``GPL13534``): ``#`` description lines above the header ``ID  Name  IlmnID ...``;
* a **UCSC Xena probeMap**: header ``#id  gene  chrom ...``, several genes joined by ``,``, ``.`` for none;
* a **Firehose methylation table**: the second header row ``Composite Element REF  Beta_value  Gene_Symbol ...``;
* any CSV/TSV whose first two columns are the feature id and its gene(s).

The header is the first of the top :data:`HEADER_LINES` lines that names a probe column and a gene column
(:data:`PROBE_COLUMNS`, :data:`GENE_COLUMNS`, case and spacing ignored); without one, the first line and its first
two columns. Reading stops at a ``[Section]`` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from clinicmm.errors import InputError
from clinicmm.ingest.tables import first_rows, separator, spelled, table_format

HEADER_LINES = 64  # how far down a map's header is looked for (Illumina's [Heading] has 7 lines, GEO's a few dozen)
# probe id columns, best first; Illumina manifests give the same probe as IlmnID and Name (EPIC v2: with and
# without the _TC21 / _BC11 suffix), so both are keys there ("Name" alone may be anything, so it is no probe column)
PROBE_COLUMNS = ("ilmnid", "probe_id", "probeid", "#id", "id", "id_ref", "composite_element_ref", "probe", "feature_id",
                 "feature")  # fmt: skip
GENE_COLUMNS = ("ucsc_refgene_name", "gene_symbol", "gene_symbols", "gene", "genes", "symbol", "gene_name",
                "hugo_symbol")  # fmt: skip
NO_GENE = frozenset({"", ".", "-", "--", "---", "na", "n/a", "nan", "none", "null"})
GENE_SEPARATORS = re.compile(r"\s*(?:///|[;,|])\s*")  # Illumina ';', Xena ',', GEO ' /// ', TCGA '|'


@dataclass
class FeatureMap:
    """feature id -> gene symbols, and how the file was read (one line for the ingest report)."""

    genes: dict[str, list[str]]
    note: str


def split_genes(cell: object) -> list[str]:
    """The gene symbols of one map cell, each once, in order: ``'RBL2;RBL2'`` -> ``['RBL2']``, ``'.'`` -> ``[]``."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    names: list[str] = []
    for name in GENE_SEPARATORS.split(str(cell).strip()):
        if name.lower() not in NO_GENE and name not in names:
            names.append(name)
    return names


def _find_header(lines: list[list[str]]) -> tuple[int, list[int], int] | None:
    """``(line, probe columns, gene column)`` of the first line naming a probe and a gene column."""
    for at, row in enumerate(lines):
        names = [spelled(c) for c in row]
        genes = [names.index(n) for n in GENE_COLUMNS if n in names]
        probes = [names.index(n) for n in PROBE_COLUMNS if n in names]
        if not genes or not probes:
            continue
        probes = [j for j in probes if j != genes[0]]
        if not probes:
            continue
        if "ilmnid" in names:  # Illumina: IlmnID, and Name beside it
            return at, [names.index(n) for n in ("ilmnid", "name") if n in names], genes[0]
        return at, probes[:1], genes[0]
    return None


def read_feature_map(path: Path, key: str) -> FeatureMap:
    """Read a feature -> gene map (see the module notes); ``key`` names the setting in messages."""
    sep = separator(table_format(path, (".csv", ".tsv", ".txt"), key))
    lines = first_rows(path, sep, HEADER_LINES)
    found = _find_header(lines)
    if found is None:  # a plain table: its first line is the header, its first two columns the id and gene(s)
        if not lines or len(lines[0]) < 2:
            raise InputError(
                f"{path}: {key} needs a feature id column and a gene symbol column (named e.g. IlmnID and "
                "UCSC_RefGene_Name, #id and gene, or the first two columns of the table); found none."
            )
        found = (0, [0], 1)
    at, keys, gene = found
    header = lines[at]
    columns = sorted({*keys, gene})
    try:
        body = pd.read_csv(path, sep=sep, header=None, names=range(len(header)), skiprows=at + 1, usecols=columns,
                           dtype=str, keep_default_na=False, encoding="utf-8-sig")  # fmt: skip  # short rows padded
    except pd.errors.EmptyDataError:
        body = pd.DataFrame(columns=columns, dtype=str)
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as a table ({exc}). Check its format and separator.") from None
    first = body[keys[0]].fillna("").str.strip()
    section = np.flatnonzero(first.str.startswith("[").to_numpy())  # Illumina's [Controls] below the probes
    if section.size:
        body, first = body.iloc[: section[0]], first.iloc[: section[0]]
    genes = gene_table(list(first), list(body[gene]))
    for column in keys[1:]:  # Illumina's Name beside IlmnID: the same probes, without EPIC v2's suffix
        for feature, names in gene_table(list(body[column].fillna("").str.strip()), list(body[gene])).items():
            genes.setdefault(feature, names)
    named = " and ".join(repr(header[j]) for j in keys)
    note = (
        f"{path.name}: probe ids from {named}, genes from {header[gene]!r} (header on line {at + 1}"
        f"{'; the sections below the probes are not read' if section.size else ''}): {len(first):,} rows, "
        f"{len(genes):,} ids with a gene"
    )
    return FeatureMap(genes, note)


def gene_table(ids: list[str], cells: list[object]) -> dict[str, list[str]]:
    """feature id -> genes from a gene column beside the ids (a map's, or Firehose methylation's ``Gene_Symbol``);
    an id listed twice gathers the genes of both rows."""
    out: dict[str, list[str]] = {}
    for feature, cell in zip(ids, cells, strict=True):
        names = split_genes(cell)
        if feature and names:
            known = out.setdefault(feature, [])
            known += [n for n in names if n not in known]
    return out


def map_features(matrix: pd.DataFrame, table: dict[str, list[str]]) -> tuple[pd.DataFrame, int]:
    """Mapped features averaged per gene (a feature of several genes counts for each), then the unmapped ones
    as they are; ``(matrix, features mapped)``."""
    mapped = [c for c in matrix.columns if c in table]
    genes = sorted({g for c in mapped for g in table[c]})
    if not genes:
        return matrix, 0
    index = {g: j for j, g in enumerate(genes)}
    rows = [i for i, c in enumerate(mapped) for _ in table[c]]
    member = sparse.csr_array(
        (np.ones(len(rows)), (rows, [index[g] for c in mapped for g in table[c]])), shape=(len(mapped), len(genes))
    )  # sparse: a 450k array's probes x genes would be ~60 GB dense
    values = matrix[mapped].to_numpy(dtype=float)
    seen = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (member.T @ np.nan_to_num(values).T).T / (member.T @ seen.astype(float).T).T
    by_gene = pd.DataFrame(means, index=matrix.index, columns=pd.Index(genes, dtype=str))
    rest = matrix[[c for c in matrix.columns if c not in table and c not in index]]
    return pd.concat([by_gene, rest], axis=1), len(mapped)
