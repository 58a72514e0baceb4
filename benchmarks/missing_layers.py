"""Patients missing whole omics layers or single values, as TCGA-style cohorts have them: unmeasured values
imputed against the training mean, on the same folds.

From the KIPAN layer tables (``workflows/tcga_kipan_prepare.py`` writes them), each layer loses the rows of a
random ``--missing`` share of the patients (seeded; a patient keeps at least one layer), as when one assay failed
or was never run, and a random ``--cells`` share of the remaining values (failed probes, empty cells). Each
setting of ``encoders.genomics.impute_components`` (default: 32, the encoder default, and 0, the training mean)
runs the same stratified 5-fold split (``compare``'s, seed ``--fold-seed``), preprocessor and models refitted per
fold; per model it prints the pooled out-of-fold macro-F1 [bootstrap 95% CI] and the paired
difference to the last setting [95% CI, 1,000 resamples], with the full cohort (no layer removed) as a third
reference when ``--full``. Plain prints, no assertions; a minute or two per setting on 2 CPU cores.

    python workflows/tcga_kipan_prepare.py                      # once
    .venv/bin/python benchmarks/missing_layers.py [--missing 0.3] [--models concat,kg_pathway,logreg]
        [--cells 0.0] [--components 32,0] [--fold-seed 0] [--full]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from panel_transfer import DATA, LAYERS, REACTOME, REPO, write_layers  # the KIPAN layers, written the same way


def write_cohort(root: Path, missing: float, seed: int, cells: float = 0.0) -> tuple[Path, dict[str, int]]:
    """Layer tables under ``root`` without the rows of ``missing`` of the patients each (at least one layer kept
    per patient) and with ``cells`` of the other values blank, labels and dataset YAML; the dataset path and how
    many patients each layer lost."""
    rng = np.random.default_rng(seed)
    labels = pd.read_csv(DATA / "labels.csv")
    labels.to_csv(root / "labels.csv", index=False)
    patients = labels["patient_id"].to_numpy()
    drop = rng.random((len(patients), len(LAYERS))) < missing
    for i in np.flatnonzero(drop.all(axis=1)):  # never all three: that patient would have no omics at all
        drop[i, rng.integers(len(LAYERS))] = False
    lost = {name: int(drop[:, j].sum()) for j, name in enumerate(LAYERS)}

    def remove(name: str, table: pd.DataFrame) -> pd.DataFrame:
        table = table[~table["sample_id"].isin(set(patients[drop[:, list(LAYERS).index(name)]]))].copy()
        values = table.iloc[:, 1:]
        table.iloc[:, 1:] = values.mask(rng.random(values.shape) < cells)
        return table

    return write_layers(root, "kipan_gaps", remove), lost


def workflow(root: Path, dataset: Path, name: str, models: list[str], components: int):
    from clinicmm.config import load_workflow

    wf = {
        "name": f"kipan_gaps_{name}",
        "dataset": str(dataset),
        "workdir": str(root / f"work_{name}"),
        "knowledge": [str(REACTOME)],
        "models": models,
        "encoders": {"genomics": {"impute_components": components}},
        "training": yaml.safe_load((REPO / "workflows" / "tcga_kipan.yaml").read_text())["training"],
        "tracking": {"uri": f"sqlite:///{root}/mlruns/mlflow.db", "experiment": "missing-layers"},
    }
    (root / f"{name}.yaml").write_text(yaml.safe_dump(wf, sort_keys=False))
    return load_workflow(root / f"{name}.yaml")


def out_of_fold(wf, models: list[str], fold_seed: int):
    """Labels (the cohort's patient order), classes and each model's pooled out-of-fold probabilities."""
    from clinicmm.config import CompareSpec
    from clinicmm.evaluation.compare import cv_data, run_cv
    from clinicmm.pipeline.run import prepare
    from clinicmm.training.data import TrainingData

    prepare(wf, "encode", progress=False)
    data = cv_data(TrainingData(wf))
    cmp = CompareSpec(folds=5, seed=fold_seed, champion=False)
    res = run_cv(data, models, [], wf.training, cmp, progress=False)
    return res.y, list(res.classes), res.probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--missing", type=float, default=0.3, help="share of the patients each layer loses")
    parser.add_argument("--models", default="concat,kg_pathway,logreg")
    parser.add_argument("--cells", type=float, default=0.0, help="share of the remaining values left blank")
    parser.add_argument("--components", default="32,0", help="impute_components settings; the last is the reference")
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="also the cohort with every layer (default components)")
    args = parser.parse_args()
    if not (DATA / "mrna.tsv").is_file():
        print(f"skipped: {DATA} lacks the layer tables; run `python workflows/tcga_kipan_prepare.py` first")
        return
    from clinicmm.evaluation.bootstrap import intervals, paired_delta, resamples, scores

    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    models, settings = args.models.split(","), [int(c) for c in args.components.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset, lost = write_cohort(root, args.missing, seed=args.fold_seed, cells=args.cells)
        print(f"patients without a layer: {lost} (of 198), {args.cells:.0%} of the other values blank; 5-fold, "
              f"seed {args.fold_seed}", flush=True)  # fmt: skip
        for c in settings:
            results[f"impute {c}"] = out_of_fold(workflow(root, dataset, f"c{c}", models, c), models, args.fold_seed)
        if args.full:
            full = REPO / "workflows" / "tcga_kipan_dataset.yaml"
            results["all layers"] = out_of_fold(
                workflow(root, full, "full", models, settings[0]), models, args.fold_seed
            )
    reference = f"impute {settings[-1]}"
    y, classes, _ = results[reference]
    k, idx = len(classes), resamples(len(y), 1000, 0)
    rows = []
    for setting, (y_s, _, probs) in results.items():
        assert np.array_equal(y_s, y), "the settings must score the same patients in the same order"
        for name in models:
            low, high = intervals(y, probs[name], k, idx)["macro_f1"]
            row = {"setting": setting, "model": name}
            row["macro_f1"] = f"{scores(y, probs[name], k)['macro_f1']:.3f} [{low:.3f}, {high:.3f}]"
            if setting != reference:
                d, lo, hi = paired_delta(y, probs[name], results[reference][2][name], k, idx)
                row[f"Δ vs {reference}"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            rows.append(row)
    print(pd.DataFrame(rows).fillna("–").to_string(index=False))


if __name__ == "__main__":
    main()
