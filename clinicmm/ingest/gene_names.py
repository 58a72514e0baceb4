"""Gene harmonisation: whatever a table calls a gene -> its one current HGNC symbol.

Sequencing cores and public archives name genes by current HGNC symbols, previous symbols, aliases, Ensembl
gene ids (often with a version suffix, ``ENSG00000141510.17``), NCBI (Entrez) gene ids, or ``SYMBOL|ENTREZ``
pairs (TCGA RSEM tables). The graph and the fitted model know genes by current symbol only, so every name is
resolved once, at ingest, with the order HGNC recommends: an approved symbol wins over a previous symbol, which
wins over an alias; a name that is the previous symbol or alias of several genes is *ambiguous* and left as
it is rather than guessed.

The table comes from HGNC (CC0). The package ships a compact copy (``data/hgnc_genes.tsv.gz``, see
``data/SOURCES.md``); ``genomics.genes.hgnc_table`` in the dataset YAML points at a newer download instead,
in either format HGNC's site produces (the "complete set" ``hgnc_complete_set.txt`` or a custom download with
"Approved symbol", "Previous symbols", "Alias symbols", "Ensembl gene ID", "NCBI Gene ID" columns).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from clinicmm.errors import ConfigError

SHIPPED_TABLE = "hgnc_genes.tsv.gz"
# How a name was resolved, in the order they are tried (after ids). "unmapped"/"ambiguous": left as given.
HOW = ("approved", "ensembl", "entrez", "previous", "alias", "withdrawn", "case", "ambiguous", "unmapped")
LOC_ID = re.compile(r"^LOC(\d+)$")
ENSEMBL_ID = re.compile(r"^(ENSG\d{6,})(?:\.\d+)?(?:_PAR_Y)?$", re.IGNORECASE)
# Columns of the compact shipped table; they are also the names HGNC's complete set uses.
COMPACT_COLUMNS = ("symbol", "prev_symbol", "alias_symbol", "ensembl_gene_id", "entrez_id", "withdrawn_symbol")
_CUSTOM = {  # HGNC custom-download header -> compact name (first one present wins)
    "symbol": ("Approved symbol",),
    "prev_symbol": ("Previous symbols",),
    "alias_symbol": ("Alias symbols",),
    "ensembl_gene_id": ("Ensembl gene ID", "Ensembl ID(supplied by Ensembl)"),
    "entrez_id": ("NCBI Gene ID", "NCBI Gene ID(supplied by NCBI)"),
}


@dataclass
class Harmonized:
    """The result of :meth:`GeneHarmonizer.harmonize` for a list of gene names."""

    names: list[str]  # one per input: the current symbol, or the input itself when unmapped/ambiguous
    how: list[str]  # one of HOW per input
    keep: list[int]  # positions to keep: the first (approved-named first) of each resulting symbol
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)  # (dropped name, symbol, kept name)

    def counts(self) -> dict[str, int]:
        """Counts per :data:`HOW` plus ``genes`` (inputs), ``kept`` and ``duplicates`` (dropped repeats)."""
        seen = Counter(self.how)
        return {"genes": len(self.names), **{h: seen.get(h, 0) for h in HOW},
                "duplicates": len(self.duplicates), "kept": len(self.keep)}  # fmt: skip


class GeneHarmonizer:
    """Resolves gene names to current HGNC symbols (see the module docstring for the order).

    Build it with :meth:`shipped` or :meth:`from_table`; :meth:`resolve` maps one name, :meth:`harmonize` a
    table's gene columns (reporting duplicates and unmapped names).
    """

    def __init__(self, table: pd.DataFrame, source: str) -> None:
        self.source = source
        self._approved: dict[str, str] = {}
        self._ids: dict[str, dict[str, str]] = {"ensembl": {}, "entrez": {}}
        self._lookup: dict[str, dict[str, set[str]]] = {"previous": {}, "alias": {}, "withdrawn": {}}
        self._upper: dict[str, set[str]] = {}
        for row in table.itertuples(index=False):
            self._add(row)

    def _add(self, row: tuple) -> None:
        symbol = row.symbol
        self._approved[symbol] = symbol
        self._upper.setdefault(symbol.upper(), set()).add(symbol)
        for key, column in (("ensembl", row.ensembl_gene_id), ("entrez", row.entrez_id)):
            for value in _split(column):
                self._ids[key].setdefault(value.upper() if key == "ensembl" else value, symbol)
        for how, column in (("previous", row.prev_symbol), ("alias", row.alias_symbol),
                            ("withdrawn", row.withdrawn_symbol)):  # fmt: skip
            for name in _split(column):
                self._lookup[how].setdefault(name, set()).add(symbol)
                if how != "withdrawn":
                    self._upper.setdefault(name.upper(), set()).add(symbol)

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def shipped(cls) -> GeneHarmonizer:
        """The table shipped with clinicmm (read once per process)."""
        return _shipped()

    @classmethod
    def from_table(cls, path: Path | str) -> GeneHarmonizer:
        """A user's HGNC download (complete set or custom download, plain or .gz) or the compact format."""
        path = Path(path)
        return cls(read_hgnc_table(path), str(path))

    @property
    def size(self) -> int:
        """How many current symbols the table holds."""
        return len(self._approved)

    # ------------------------------------------------------------------------------------------ resolving

    def resolve(self, name: str) -> tuple[str | None, str]:
        """``(symbol, how)``; symbol is None when ``how`` is ``unmapped`` or ``ambiguous``."""
        name = str(name).strip()
        if not name:
            return None, "unmapped"
        if "|" in name:  # SYMBOL|ENTREZ (TCGA), also ENTREZ|SYMBOL: the id is the sharper key
            return self._pair(name)
        if name in self._approved:
            return name, "approved"
        if match := ENSEMBL_ID.match(name):
            symbol = self._ids["ensembl"].get(match.group(1).upper())
            return (symbol, "ensembl") if symbol else (None, "unmapped")
        if name.isdigit():
            symbol = self._ids["entrez"].get(name.lstrip("0") or "0")
            return (symbol, "entrez") if symbol else (None, "unmapped")
        symbol, how = self._by_name(name)
        if symbol is None and (loc := LOC_ID.match(name)):  # NCBI's LOC<gene id> placeholder names
            return self.resolve(loc.group(1))
        return symbol, how

    def _by_name(self, name: str) -> tuple[str | None, str]:
        for how in ("previous", "alias", "withdrawn"):
            targets = self._lookup[how].get(name)
            if targets:
                return (next(iter(targets)), how) if len(targets) == 1 else (None, "ambiguous")
        targets = self._upper.get(name.upper())
        if not targets:
            return None, "unmapped"
        return (next(iter(targets)), "case") if len(targets) == 1 else (None, "ambiguous")

    def _pair(self, name: str) -> tuple[str | None, str]:
        parts = [p.strip() for p in name.split("|") if p.strip() and p.strip() != "?"]
        ids = [p for p in parts if p.isdigit() or ENSEMBL_ID.match(p)]
        words = [p for p in parts if p not in ids]
        results = [self.resolve(p) for p in ids + words]
        found = [r for r in results if r[0] is not None]
        if found:  # "approved" when the pair already spells the current symbol, else how it was renamed
            return (found[0][0], "approved") if found[0][0] in words else found[0]
        return (None, "ambiguous") if any(h == "ambiguous" for _, h in results) else (None, "unmapped")

    def harmonize(self, names: Sequence[str]) -> Harmonized:
        """Resolve every name; of several names giving one symbol, keep the one already spelled as the symbol,
        else the first in file order. Unmapped and ambiguous names stay as given (and are kept)."""
        resolved = [self.resolve(n) for n in names]
        out = [s if s is not None else str(n).strip() for n, (s, _) in zip(names, resolved, strict=True)]
        how = [h for _, h in resolved]
        winner: dict[str, int] = {}
        for j, symbol in enumerate(out):
            if symbol and (symbol not in winner or (how[j] == "approved" and how[winner[symbol]] != "approved")):
                winner[symbol] = j
        keep = sorted(winner.values())
        kept = set(keep)
        duplicates = [(str(names[j]).strip(), out[j], str(names[winner[out[j]]]).strip())
                      for j in range(len(out)) if j not in kept and out[j]]  # fmt: skip
        return Harmonized(out, how, keep, duplicates)


# ---------------------------------------------------------------------------------------------- reading


def read_hgnc_table(path: Path) -> pd.DataFrame:
    """An HGNC table as the compact columns (:data:`COMPACT_COLUMNS`, lists joined with ``|``), approved
    genes only; withdrawn symbols merged into one gene become that gene's ``withdrawn_symbol``."""
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=0, encoding="utf-8-sig")
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot be read as an HGNC table ({exc}). Use the tab-separated file HGNC's download page "
            "gives (hgnc_complete_set.txt, or a custom download with 'Approved symbol' etc.)."
        ) from None
    table.columns = [str(c).strip() for c in table.columns]
    if "symbol" in table.columns:
        return _from_complete_set(table)
    if "Approved symbol" in table.columns:
        return _from_custom_download(table, path)
    raise ConfigError(
        f"{path}: no 'symbol' (HGNC complete set) or 'Approved symbol' (HGNC custom download) column; the file "
        f"has {', '.join(repr(c) for c in table.columns[:8])}. Point genomics.genes.hgnc_table at an HGNC download."
    )


def _from_complete_set(table: pd.DataFrame) -> pd.DataFrame:
    if "status" in table.columns:
        table = table[table["status"].str.strip().isin(["Approved", ""])]
    out = pd.DataFrame({c: table[c] if c in table.columns else "" for c in COMPACT_COLUMNS})
    for c in COMPACT_COLUMNS[1:]:
        out[c] = out[c].map(lambda v: "|".join(_split(v)))
    return _tidy(out)


def _from_custom_download(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    out = pd.DataFrame({"symbol": table["Approved symbol"]})
    for name, headers in _CUSTOM.items():
        column = next((h for h in headers if h in table.columns), None)
        out[name] = table[column].map(lambda v: "|".join(_split(v))) if column else ""
    status = table["Status"].str.strip() if "Status" in table.columns else pd.Series("Approved", index=table.index)
    out["withdrawn_symbol"] = ""
    if "HGNC ID" in table.columns and "Approved name" in table.columns:
        by_id = dict(zip(table["HGNC ID"].str.strip(), out.index, strict=True))
        merged = table[status == "Symbol Withdrawn"]
        for symbol, name in zip(merged["Approved symbol"], merged["Approved name"], strict=True):
            targets = set(re.findall(r"HGNC:\d+", name))
            if len(targets) == 1 and (row := by_id.get(targets.pop())) is not None and status[row] == "Approved":
                old = out.at[row, "withdrawn_symbol"]
                out.at[row, "withdrawn_symbol"] = f"{old}|{symbol.strip()}" if old else symbol.strip()
    return _tidy(out[status == "Approved"])


def _tidy(out: pd.DataFrame) -> pd.DataFrame:
    out = out.assign(symbol=out["symbol"].str.strip())
    out = out[out["symbol"] != ""].drop_duplicates("symbol")
    if out.empty:
        raise ConfigError("the HGNC table holds no approved gene; check that it is an HGNC download")
    return out.reset_index(drop=True)[list(COMPACT_COLUMNS)]


def _split(value: object) -> list[str]:
    """``'A, B'`` / ``'A|B'`` / ``'"A|B"'`` -> ``['A', 'B']`` (empty cells: [])."""
    text = str(value or "").strip().strip('"')
    return [p.strip() for p in re.split(r"[|,]", text) if p.strip()] if text else []


@lru_cache(maxsize=1)
def _shipped() -> GeneHarmonizer:
    resource = resources.files("clinicmm.ingest") / "data" / SHIPPED_TABLE
    with resources.as_file(resource) as path:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return GeneHarmonizer(table, f"clinicmm shipped {SHIPPED_TABLE}")


def harmonizer_for(hgnc_table: Path | None) -> GeneHarmonizer:
    """The user's table when one is named, else the shipped one."""
    return GeneHarmonizer.from_table(hgnc_table) if hgnc_table is not None else GeneHarmonizer.shipped()


def summary_lines(name: str, kind: str, result: Harmonized, examples: int = 5) -> list[str]:
    """Readable ingest-report lines: what was renamed, dropped as a duplicate, or left unmapped."""
    c = result.counts()
    renamed = c["genes"] - c["approved"] - c["unmapped"] - c["ambiguous"]
    lines = [
        f"{name}: {c['genes']} gene {kind}s -> {c['kept']} genes: {c['approved']} current HGNC symbols, {renamed} "
        f"renamed (ensembl {c['ensembl']}, entrez {c['entrez']}, previous {c['previous']}, alias {c['alias']}, "
        f"withdrawn {c['withdrawn']}, case {c['case']}), {c['unmapped']} unmapped, {c['ambiguous']} ambiguous, "
        f"{c['duplicates']} duplicates dropped"
    ]
    if result.duplicates:
        shown = "; ".join(f"{d!r} -> {s!r} (kept {k!r})" for d, s, k in result.duplicates[:examples])
        lines.append(f"{name}: gene {kind}s naming a gene already present, dropped: {shown}"
                     + (" ..." if len(result.duplicates) > examples else ""))  # fmt: skip
    left = [n for n, h in zip(result.names, result.how, strict=True) if h in ("unmapped", "ambiguous")]
    if left:
        lines.append(f"{name}: not current HGNC symbols and not resolvable, kept as given: "
                     + ", ".join(repr(n) for n in left[:examples]) + (" ..." if len(left) > examples else ""))  # fmt: skip
    return lines
