"""Arm-level copy number through the graph: a ``features: cytoband`` layer pooled over the pathways, against the same
models seeing the arms as plain features, on real tumours.

No arm-level copy-number table of a public cohort is shipped, so this builds the closest real one: TCGA-KIPAN's
198 tumours (``workflows/tcga_kipan_prepare.py`` first), each chromosome arm scored by the mean z-score of the
expressed genes HGNC locates on it — the expression-derived dosage that inferCNV and CaSpER read aneuploidy from
(kidney tumours differ by it: KIRC loses 3p, KIRP gains 7 and 17, KICH loses whole chromosomes). It is a proxy,
not measured copy number. The arms are the cohort's only omics layer (``features: cytoband``), so everything the
models know of a patient is ~40 numbers.

Same stratified 5-fold split for every model (seed 0, as ``compare``); each pooled model twice: with the arms
pooled over the graph's gene sets (the default) and with region pooling off (the arms are then plain features:
kg_pathway is concat and kg_logreg is logreg). Prints pooled out-of-fold macro-F1 [bootstrap 95% CI], the paired
difference pooled − plain, real − degree-preserving rewired graph (``compare``'s knowledge ablation: the same arms
pooled over random gene sets of the same sizes) and each model − logreg [95% CI, 1,000 resamples], and how many gene
sets the arms fill.

    .venv/bin/python benchmarks/arm_level.py [--models logreg,concat,kg_pathway,kg_logreg,kg_gnn] [--fold-seed 0]
"""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np
import pandas as pd
import yaml
from recipe import KIPAN_DATA, REACTOME, REPO  # the KIPAN tables and the Reactome graph, as recipe.py finds them

WORK = REPO / ".clinicmm" / "arm_level"
POOLED = ("kg_pathway", "kg_logreg", "kg_gnn", "kg_rgcn")


def arm_table(mrna: pd.DataFrame, min_genes: int = 10) -> pd.DataFrame:
    """Patients x arms: the mean z-score (over patients) of the genes located on each arm with >= ``min_genes``."""
    from clinicmm.ingest.cytobands import GeneLocations

    locations = GeneLocations.shipped()
    z = (mrna - mrna.mean()) / mrna.std(ddof=0).replace(0, np.nan)
    arms = {}
    for chromosome in [*map(str, range(1, 23)), "X"]:
        for arm in ("p", "q"):
            genes = [g for g in locations.genes_in(f"{chromosome}{arm}") if g in z.columns]
            if len(genes) >= min_genes:
                arms[f"{chromosome}{arm}"] = z[genes].mean(axis=1)
    return pd.DataFrame(arms)


def workflow(models: list[str]):
    from clinicmm.config import load_workflow

    data = KIPAN_DATA
    root = WORK
    (root / "data").mkdir(parents=True, exist_ok=True)
    mrna = pd.read_csv(data / "mrna.tsv", sep="\t", index_col=0)
    arm_table(mrna).to_csv(root / "data" / "arms.tsv", sep="\t", float_format="%.6g")
    dataset = {
        "name": "kipan_arms",
        "labels": {"path": str(data / "labels.csv"), "patient_column": "patient_id", "label_column": "cancer_type"},
        "genomics": {"layers": [{"name": "arms", "kind": "copy_number", "path": "arms.tsv", "unit": "log",
                                 "features": "cytoband"}]},
        "split": {"val": 0.15, "test": 0.2, "seed": 0},
    }  # fmt: skip
    (root / "data" / "dataset.yaml").write_text(yaml.safe_dump(dataset, sort_keys=False))
    wf = {
        "name": "arm_level",
        "dataset": str(root / "data" / "dataset.yaml"),
        "workdir": str(root / "work"),
        "knowledge": [str(REACTOME)],
        "models": models,
        "training": yaml.safe_load((REPO / "workflows" / "tcga_kipan.yaml").read_text())["training"],
        "tracking": {"uri": f"sqlite:///{root}/mlruns/mlflow.db", "experiment": "arm-level"},
    }
    (root / "wf.yaml").write_text(yaml.safe_dump(wf, sort_keys=False))
    return load_workflow(root / "wf.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="logreg,concat,kg_pathway,kg_logreg,kg_gnn")
    parser.add_argument("--fold-seed", type=int, default=0)
    args = parser.parse_args()
    if not (KIPAN_DATA / "mrna.tsv").is_file():
        print("skipped: run `python workflows/tcga_kipan_prepare.py` first")
        return
    import clinicmm.encode.genomics as genomics
    import clinicmm.training.data as training_data
    from clinicmm.config import CompareSpec
    from clinicmm.evaluation.bootstrap import intervals, paired_delta, resamples, scores
    from clinicmm.evaluation.compare import REWIRED, cv_data, run_cv
    from clinicmm.fusion.models.kg_pathway import GeneSetPooling
    from clinicmm.pipeline.run import prepare
    from clinicmm.training.data import TrainingData

    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    models = args.models.split(",")
    wf = workflow(models)
    prepare(wf, "encode", progress=False)
    data = cv_data(TrainingData(wf))
    k = len(data.classes)
    genes, _ = training_data.omics_gene_index(data.data.genomics, data.data.kg, "kg_pathway")
    hetero = data.data.kg.to_hetero()
    print(f"{len(data.y)} patients, {len(genes)} arm features; gene sets they fill: "
          f"{GeneSetPooling(hetero, genes, None, len(genes)).num_sets}", flush=True)  # fmt: skip
    cmp = CompareSpec(folds=5, seed=args.fold_seed, champion=False, knowledge_ablation=True)
    res = run_cv(data, models, [], wf.training, cmp, progress=False)
    cmp = cmp.model_copy(update={"knowledge_ablation": False})
    original = genomics.is_region
    genomics.is_region = lambda name, regions: False  # the arms as plain features: link_gene looks it up per call
    try:
        off = run_cv(data, [m for m in models if m in POOLED], [], wf.training, cmp, progress=False)
    finally:
        genomics.is_region = original
    idx = resamples(len(res.y), 1000, 0)
    rows = []
    for name, probs in res.probs.items():
        if name.endswith(REWIRED):
            continue
        low, high = intervals(res.y, probs, k, idx)["macro_f1"]
        row = {"model": name, "macro_f1": f"{scores(res.y, probs, k)['macro_f1']:.3f} [{low:.3f}, {high:.3f}]"}
        if name in off.probs:
            p = off.probs[name]
            d, lo, hi = paired_delta(res.y, probs, p, k, idx)
            row["plain arms"] = f"{scores(res.y, p, k)['macro_f1']:.3f}"
            row["pooled − plain"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        if name + REWIRED in res.probs:
            d, lo, hi = paired_delta(res.y, probs, res.probs[name + REWIRED], k, idx)
            row["real − rewired graph"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        if "logreg" in res.probs and name != "logreg":
            d, lo, hi = paired_delta(res.y, probs, res.probs["logreg"], k, idx)
            row["Δ vs logreg"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        rows.append(row)
    print(pd.DataFrame(rows).fillna("–").to_string(index=False))


if __name__ == "__main__":
    main()
