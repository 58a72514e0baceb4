"""Gene harmonisation as ingest reports it: counts in report.json / report.md, counts only in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clinicmm.config import load_dataset
from clinicmm.ingest.cohort import build_cohort, render_report
from clinicmm.tracking.runs import ingest_summary

KIPAN = Path(__file__).resolve().parents[3] / "shared" / "data" / "tcga_kipan"


def _dataset(folder: Path, genes: list[str], values: pd.DataFrame, labels: list[str], unit: str = "tpm") -> Path:
    values = values.copy()
    values.columns = genes
    values.insert(0, "sample_id", [f"TCGA-AA-{i:04d}-01A" for i in range(len(values))])
    values.to_csv(folder / "expression.csv", index=False)
    patients = [s[:12] for s in values["sample_id"]]
    pd.DataFrame({"patient_id": patients, "cancer_type": labels}).to_csv(folder / "labels.csv", index=False)
    (folder / "dataset.yaml").write_text(
        "name: genes\nlabels: {path: labels.csv}\n"
        f"genomics:\n  expression: {{path: expression.csv, unit: {unit}}}\n  patient_id_length: 12\n"
    )
    return folder / "dataset.yaml"


def test_ingest_report_counts_renamed_duplicate_and_unmapped_genes(tmp_path: Path) -> None:
    genes = ["TP53", "SEPT7", "ENSG00000141510.5", "NOT_A_GENE_1", "ERBB2"]
    values = pd.DataFrame([[float(i + j) for j in range(5)] for i in range(6)])
    cohort = build_cohort(load_dataset(_dataset(tmp_path, genes, values, ["A", "B"] * 3)))
    counts = cohort.report["genes"]["expression"]
    assert counts["columns"] == 5 and counts["duplicates"] == 1 and counts["unmapped"] == 1
    assert counts["previous"] == 1 and counts["features"] == 4
    assert cohort.expression.columns.tolist() == ["TP53", "SEPTIN7", "NOT_A_GENE_1", "ERBB2"]
    text = render_report(cohort.report)
    assert "Genes of the expression table" in text and "'ENSG00000141510.5' -> 'TP53'" in text
    summary = json.dumps(ingest_summary(cohort.report))
    assert '"duplicates": 1' in summary and "TCGA-AA" not in summary and "NOT_A_GENE" not in summary


@pytest.mark.skipif(not KIPAN.is_dir(), reason="needs ../shared/data/tcga_kipan (the project's shared data)")
def test_real_tcga_table_maps_nearly_every_gene(tmp_path: Path) -> None:
    genes = pd.read_csv(KIPAN / "1_featname.csv", header=None)[0].tolist()  # SYMBOL|ENTREZ, TCGA style
    values = pd.read_csv(KIPAN / "1_te.csv", header=None).iloc[:20]
    labels = pd.read_csv(KIPAN / "labels_te.csv", header=None)[0].astype(str).iloc[:20].tolist()
    cohort = build_cohort(load_dataset(_dataset(tmp_path, genes, values, labels, unit="normalized")))
    counts = cohort.report["genes"]["expression"]
    resolved = counts["genes"] - counts["unmapped"] - counts["ambiguous"]
    assert counts["genes"] == len(genes) and resolved >= 0.98 * len(genes)
    assert counts["entrez"] > 0  # outdated symbols renamed through their NCBI gene id
    still_pairs = [g for g in cohort.expression.columns if "|" in g]  # only the unresolved keep TCGA's pair
    assert len(still_pairs) == counts["unmapped"] + counts["ambiguous"]
