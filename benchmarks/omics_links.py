"""How many graph genes each TCGA-KIPAN patient's omics node links to: before and after graph-aware selection.

Reads the KIPAN table as the ingest stage does (``workflows/tcga_kipan_dataset.yaml``: gene names harmonised to
HGNC symbols), fits the genomics preprocessor on every patient with the workflow's evidence rule
(``encoders.genomics`` of ``workflows/tcga_kipan.yaml``), builds the workflow's graph (``KnowledgeGraph.default
('subset')`` plus the Reactome GMT of ``../shared/data/kg``), then counts per patient the omics links that are
graph gene nodes:

* before: every feature competes for the ``max_genes_per_patient`` budget under its own name, and the graph
  keeps only the names that are gene nodes (what ``clinicmm.training.data.to_evidence`` did with the old links);
* after: only features that link to a graph gene compete (``Featurizer.omics`` passes the graph's genes).

It prints mean / min / median / max links per patient, the share of patients with none, the means per cancer
type, and how the table's features link (linked / gene not in the graph / no gene, per layer). Counts only:
no patient id is printed. Not a test; nothing asserts.

    python workflows/tcga_kipan_prepare.py       # once: writes .clinicmm/tcga_kipan_data/ from ../shared/data
    .venv/bin/python benchmarks/omics_links.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
WORKFLOW = REPO / "workflows" / "tcga_kipan.yaml"
DATA = REPO / ".clinicmm" / "tcga_kipan_data"
GMT = SHARED / "kg" / "ReactomePathways.gmt"


def _describe(name: str, counts: np.ndarray, labels: pd.Series) -> None:
    by_type = pd.Series(counts, index=labels.index).groupby(labels).mean()
    per_type = ", ".join(f"{t} {v:.1f}" for t, v in by_type.items())
    print(
        f"{name:<7} mean {counts.mean():5.2f}  min {counts.min():2d}  median {np.median(counts):4.1f}  "
        f"max {counts.max():2d}  zero links {np.mean(counts == 0):6.1%}  ({per_type})"
    )


def main() -> int:
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent (the TCGA-KIPAN tables and the Reactome GMT live there)")
        return 0
    if not (DATA / "omics.tsv").is_file() or not (DATA / "labels.csv").is_file():
        print(f"skipped: {DATA} lacks omics.tsv / labels.csv; run `python workflows/tcga_kipan_prepare.py` first")
        return 0
    from clinicmm.config import load_dataset, load_workflow
    from clinicmm.encode.genomics import LAYERS, GenomicsPreprocessor
    from clinicmm.ingest.genomics import read_genomics
    from clinicmm.keys import Node
    from clinicmm.knowledge.graph import KnowledgeGraph

    t0 = time.perf_counter()
    wf = load_workflow(WORKFLOW)
    spec = load_dataset(wf.dataset_path)
    expression = read_genomics(spec)["expression"]
    labels = pd.read_csv(DATA / "labels.csv", dtype=str).set_index("patient_id")["cancer_type"]
    patients = [p for p in expression.index if p in labels.index]
    labels = labels.loc[patients]
    kg = KnowledgeGraph.default("subset")
    kg.add_gmt(GMT)
    graph = set(kg.names(Node.GENE))
    pre = GenomicsPreprocessor.from_spec(
        spec.genomics.expression.unit, wf.encoders.genomics, spec.genomics.genes.harmonize
    )
    pre.fit(expression, None, patients)  # every patient (the encode stage fits on the train split only)
    print(
        f"TCGA-KIPAN: {len(patients)} patients, {expression.shape[1]} feature columns after ingest harmonisation, "
        f"{len(pre.genes)} model features; graph: {len(graph)} gene nodes; z_threshold {pre.z_threshold}, "
        f"max_genes {pre.max_genes}"
    )
    before = pre.evidence(expression, None, patients)
    after = pre.evidence(expression, None, patients, graph)
    counts_before = np.array([sum(g in graph for g in before[p]) for p in patients])
    counts_after = np.array([len(after[p]) for p in patients])
    print("graph-gene links per patient:")
    _describe("before", counts_before, labels)
    _describe("after", counts_after, labels)
    stats = pre.link_counts(graph)
    print(
        f"features: {stats['features']}: linked {stats['features_linked']}, gene not in the graph "
        f"{stats['features_not_in_graph']}, no gene {stats['features_unmapped']}"
    )
    for layer in LAYERS:
        print(
            f"  {layer:<6} linked {stats[f'features_linked_{layer}']:4d}  not in graph "
            f"{stats[f'features_not_in_graph_{layer}']:4d}  no gene {stats[f'features_unmapped_{layer}']:4d}"
        )
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
