"""Turn the MOGONET TCGA-KIPAN tables into the one patient x feature table a clinicmm dataset reads.

The source folder (``../shared/data/tcga_kipan`` by default; see its README) holds three omics tables without
headers or sample ids, in the same row order: ``1_te.csv`` mRNA (1,000 genes), ``2_te.csv`` DNA methylation
(1,000 genes), ``3_te.csv`` miRNA (471), and ``labels_te.csv`` (0, 1, 2 = KICH, KIRC, KIRP, by their counts).
This script writes, into a generated folder (never into the source):

* ``omics.tsv``: ``sample_id`` then the mRNA columns under their gene symbol (so strongly changed genes link to the
  knowledge graph's gene nodes), the methylation columns as ``meth_<SYMBOL>`` and the miRNA columns as named;
  values as given (already scaled to [0, 1] per feature);
* ``mrna.tsv``, ``methylation.tsv`` (gene symbols, no prefix), ``mirna.tsv``: the same values one table per layer,
  as ``workflows/tcga_kipan_dataset.yaml`` reads them (``genomics.layers``);
* ``labels.csv``: ``patient_id``, ``cancer_type`` (OncoTree codes).

Sample ids are ``KIPAN-000`` ... in the source row order, so ``clinicmm compare`` (which sorts patients by id)
sees the patients in the order of the published tables and ``StratifiedKFold(5, shuffle=True, random_state=0)``
gives the folds of the issue's reference logistic regression.

Usage: ``python workflows/tcga_kipan_prepare.py [--source DIR] [--out DIR]``, then
``clinicmm compare workflows/tcga_kipan.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "tcga_kipan"
DEFAULT_OUT = REPO / ".clinicmm" / "tcga_kipan_data"
CODES = {0: "KICH", 1: "KIRC", 2: "KIRP"}  # the README's mapping, checked against the class sizes below
EXPECTED_ORDER = ("KIRC", "KIRP", "KICH")  # largest to smallest class in TCGA-KIPAN
TABLES = (("1", "mRNA"), ("2", "methylation"), ("3", "miRNA"))


class PrepareError(Exception):
    """The source folder is missing or not the documented layout."""


def feature_names(source: Path, table: str) -> list[str]:
    """Column names of one omics table: mRNA symbols from the conversion file, the others as listed."""
    if table == "1":
        names = pd.read_csv(source / "1_featname_conversion.csv")["official gene symbol"].astype(str).tolist()
    else:
        names = pd.read_csv(source / f"{table}_featname.csv", header=None)[0].astype(str).str.strip().tolist()
    return [f"meth_{n}" for n in names] if table == "2" else names


def read_source(source: Path) -> tuple[pd.DataFrame, pd.Series]:
    """The three tables side by side (rows = samples, source order) and the labels as OncoTree codes."""
    needed = [f"{t}_te.csv" for t, _ in TABLES] + [
        "labels_te.csv",
        "1_featname_conversion.csv",
        "2_featname.csv",
        "3_featname.csv",
    ]
    missing = [n for n in needed if not (source / n).is_file()]
    if missing:
        raise PrepareError(
            f"{source}: missing {', '.join(missing)}. Point --source at the tcga_kipan folder "
            "described in ../shared/data/README.md."
        )
    blocks = []
    for table, kind in TABLES:
        values = pd.read_csv(source / f"{table}_te.csv", header=None)
        names = feature_names(source, table)
        if values.shape[1] != len(names):
            raise PrepareError(
                f"{source / f'{table}_te.csv'}: {values.shape[1]} {kind} columns but {len(names)} "
                "feature names; the files do not belong together."
            )
        blocks.append(values.set_axis(names, axis=1))
    labels = pd.read_csv(source / "labels_te.csv", header=None)[0]
    if len({len(b) for b in blocks} | {len(labels)}) != 1:
        raise PrepareError(f"{source}: the omics tables and labels_te.csv differ in row count; they must align.")
    omics = pd.concat(blocks, axis=1)
    if omics.columns.duplicated().any():
        raise PrepareError(f"{source}: repeated feature names {sorted(set(omics.columns[omics.columns.duplicated()]))}")
    return omics, labels.map(_code)


def layer_columns(columns) -> dict[str, list[str]]:
    """The columns of each omics layer (``mrna``, ``methylation``, ``mirna``) in the one-table layout."""
    out: dict[str, list[str]] = {"mrna": [], "methylation": [], "mirna": []}
    for c in columns:
        out["methylation" if c.startswith("meth_") else "mirna" if c.lower().startswith("hsa-") else "mrna"].append(c)
    return out


def _code(value: int) -> str:
    if int(value) not in CODES:
        raise PrepareError(f"labels_te.csv: unknown label {value!r}; expected one of {sorted(CODES)}")
    return CODES[int(value)]


def check_codes(labels: pd.Series) -> None:
    """The README maps 0/1/2 by class size: the codes must come out largest-to-smallest as in TCGA-KIPAN."""
    order = tuple(labels.value_counts().index)
    if order != EXPECTED_ORDER:
        raise PrepareError(
            f"class sizes give the order {order}, not {EXPECTED_ORDER}: the 0/1/2 label mapping "
            "does not fit this copy of the data."
        )


def prepare(source: Path = DEFAULT_SOURCE, out: Path = DEFAULT_OUT) -> Path:
    """Write ``omics.tsv`` (one table), ``mrna.tsv``, ``methylation.tsv``, ``mirna.tsv`` (the same values, one
    table per ``genomics.layers`` entry) and ``labels.csv`` into ``out``; returns ``out``."""
    source, out = Path(source).resolve(), Path(out).resolve()
    if out == source or source in out.parents:
        raise PrepareError(f"{out} is inside the source folder {source}; write the generated files elsewhere.")
    omics, labels = read_source(source)
    check_codes(labels)
    ids = [f"KIPAN-{i:03d}" for i in range(len(omics))]
    out.mkdir(parents=True, exist_ok=True)
    omics = pd.concat([pd.DataFrame({"sample_id": ids}), omics], axis=1)
    omics.to_csv(out / "omics.tsv", sep="\t", index=False, float_format="%.6g")
    for name, columns in layer_columns(omics.columns[1:]).items():  # the same values, one table per layer
        table = omics[["sample_id", *columns]]
        if name == "methylation":
            table = table.rename(columns=lambda c: c.removeprefix("meth_"))
        table.to_csv(out / f"{name}.tsv", sep="\t", index=False, float_format="%.6g")
    pd.DataFrame({"patient_id": ids, "cancer_type": labels}).to_csv(out / "labels.csv", index=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"default: {DEFAULT_SOURCE}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    try:
        out = prepare(args.source, args.out)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    frame = pd.read_csv(out / "labels.csv")
    counts = ", ".join(f"{c} {n}" for c, n in frame["cancer_type"].value_counts().items())
    print(f"wrote {out / 'omics.tsv'} and {out / 'labels.csv'}: {len(frame)} patients ({counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
