"""Rename the shipped graph files' gene symbols to current HGNC symbols (previous symbols only, not aliases).

Expression tables are harmonised at ingest (``clinicmm.ingest.gene_names``), so a table that says ``H2AX`` must
meet a graph gene called ``H2AX``, not the Reactome 2021 release's ``H2AFX``. Aliases are not followed here: an
alias can name several genes (``TRX2``), a previous symbol names one. Within a pathway, a rename that meets a
gene already listed keeps one copy. Run from the repository root after replacing a shipped file:

    .venv/bin/python scripts/harmonize_graph_genes.py
"""

from __future__ import annotations

from pathlib import Path

from clinicmm.ingest.gene_names import GeneHarmonizer

DATA = Path(__file__).resolve().parents[1] / "clinicmm" / "knowledge" / "data"


def _current(h: GeneHarmonizer, symbol: str, renamed: dict[str, str]) -> str:
    new, how = h.resolve(symbol)
    if new and new != symbol and how == "previous":
        renamed[symbol] = new
        return new
    return symbol


def rewrite_gmt(path: Path, h: GeneHarmonizer) -> dict[str, str]:
    renamed: dict[str, str] = {}
    lines = []
    for line in path.read_text().splitlines():
        name, pid, *genes = line.split("\t")
        out = list(dict.fromkeys(_current(h, g, renamed) for g in genes))
        lines.append("\t".join([name, pid, *out]))
    path.write_text("\n".join(lines) + "\n")
    return renamed


def rewrite_edges(path: Path, h: GeneHarmonizer) -> dict[str, str]:
    renamed: dict[str, str] = {}
    lines = path.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        cols = line.split("\t")
        if cols[0] == "gene":
            cols[1] = _current(h, cols[1], renamed)
        if cols[3] == "gene":
            cols[4] = _current(h, cols[4], renamed)
        out.append("\t".join(cols))
    path.write_text("\n".join(out) + "\n")
    return renamed


def main() -> None:
    h = GeneHarmonizer.shipped()
    for name in ("reactome_subset.gmt", "reactome_human.gmt"):
        renamed = rewrite_gmt(DATA / name, h)
        print(f"{name}: {len(renamed)} previous symbols renamed, e.g. {sorted(renamed.items())[:4]}")
    renamed = rewrite_edges(DATA / "edges.tsv", h)
    print(f"edges.tsv: {len(renamed)} previous symbols renamed {sorted(renamed.items())}")


if __name__ == "__main__":
    main()
