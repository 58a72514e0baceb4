"""Cross-panel transfer on TCGA-KIPAN: train on patients measured on one gene panel, score patients measured on
another, partly overlapping panel; the graph models against concat and logistic regression.

From the KIPAN layers (``workflows/tcga_kipan_prepare.py`` writes them), each layer's features are split at
random (seeded) into an overlap (``--overlap``, default 20%) and two panel-only halves; the patients are split,
stratified by type, into two sites, A measured on panel A (overlap + A-only; the B-only cells are empty) and B
on panel B. Each site in turn is the test set of models trained on the other (through ``TrainingData.fold``,
as leave-one-site-out does it: genomics preprocessor, standardiser and model fitted on the training site only; a
model feature the test panel lacks is imputed from the measured ones, ``--impute-components`` 0 gives the training
mean; a feature only the test panel has is no model feature). The out-of-site predictions of both folds are
pooled and every model is compared with concat and logreg by a paired bootstrap (1000 resamples) of the
macro-F1 difference, for ``--repeats`` draws of panels and sites.

Prints one table per repeat and the pooled one. The issue's target: graph model - concat >= +0.05 macro-F1.
Plain prints, no assertions: a script, not a test. Takes a few minutes per repeat on 2 CPU cores.

    python workflows/tcga_kipan_prepare.py                      # once
    .venv/bin/python benchmarks/panel_transfer.py [--overlap 0.2] [--repeats 1] [--models concat,kg_gnn,kg_rgcn,logreg]
        [--offset none]   # the networks alone, without training.offset's logistic regression
        [--impute-components K]   # encoders.genomics.impute_components (0: unmeasured features at the training mean)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / ".clinicmm" / "tcga_kipan_data"
REACTOME = REPO.parent / "shared" / "data" / "kg" / "ReactomePathways.gmt"
LAYERS = {"mrna": "expression", "methylation": "methylation", "mirna": "mirna"}


def write_cohort(root: Path, overlap: float, seed: int) -> Path:
    """Masked layer tables, labels with a site column, dataset and workflow YAML under ``root``; the workflow."""
    rng = np.random.default_rng(seed)
    labels = pd.read_csv(DATA / "labels.csv")
    site = pd.Series("A", index=labels.index)
    for _, group in labels.groupby("cancer_type"):  # half of each type per site
        picked = rng.permutation(group.index.to_numpy())[: len(group) // 2]
        site[picked] = "B"
    labels["site"] = site.to_numpy()
    labels.to_csv(root / "labels.csv", index=False)
    on_a = set(labels.loc[labels["site"] == "A", "patient_id"])

    def mask(name: str, table: pd.DataFrame) -> pd.DataFrame:
        features = rng.permutation(table.columns[1:].to_numpy())
        n_shared = int(round(overlap * len(features)))
        rest = features[n_shared:]
        a_only, b_only = rest[: len(rest) // 2], rest[len(rest) // 2 :]
        is_a = table["sample_id"].isin(on_a).to_numpy()
        table.loc[is_a, b_only] = np.nan  # site A never measured panel B's own features
        table.loc[~is_a, a_only] = np.nan
        return table

    return write_layers(root, "kipan_panels", mask)


def write_layers(root: Path, name: str, edit) -> Path:
    """Each KIPAN layer table passed through ``edit(layer, table)`` and written under ``root`` (blank cells for
    NaN), with a dataset YAML over them and ``root/labels.csv`` (write it first); the dataset's path."""
    layers = []
    for layer, kind in LAYERS.items():
        table = edit(layer, pd.read_csv(DATA / f"{layer}.tsv", sep="\t"))
        table.to_csv(root / f"{layer}.tsv", sep="\t", index=False, na_rep="")
        entry = {"name": layer, "kind": kind, "path": f"{layer}.tsv", "unit": "normalized"}
        layers.append(entry | ({"features": "mirna"} if layer == "mirna" else {}))
    dataset = {
        "name": name,
        "labels": {"path": "labels.csv", "patient_column": "patient_id", "label_column": "cancer_type"},
        "genomics": {"layers": layers},
    }  # fmt: skip
    (root / "dataset.yaml").write_text(yaml.safe_dump(dataset, sort_keys=False))
    return root / "dataset.yaml"


def workflow(root: Path, dataset: Path, models: list[str], impute_components: int | None = None) -> Path:
    wf = {
        "name": "kipan_panels",
        "dataset": str(dataset),
        "workdir": str(root / "work"),
        "knowledge": [str(REACTOME)],
        "models": models,
        "training": {"max_epochs": 100, "patience": 15, "hidden": 64, "seed": 0},
        "tracking": {"uri": f"sqlite:///{root}/mlruns/mlflow.db", "experiment": "panel-transfer"},
    }
    if impute_components is not None:
        wf["encoders"] = {"genomics": {"impute_components": impute_components}}
    (root / "wf.yaml").write_text(yaml.safe_dump(wf, sort_keys=False))
    return root / "wf.yaml"


def out_of_site(wf_path: Path, offset: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Labels and each model's pooled out-of-site probabilities (both sites held out once)."""
    from sklearn.model_selection import train_test_split

    from clinicmm.config import load_workflow
    from clinicmm.keys import Split
    from clinicmm.pipeline.run import prepare
    from clinicmm.training.data import TrainingData
    from clinicmm.training.fit import fit_model, predict_proba

    wf = load_workflow(wf_path)
    spec = wf.training if offset is None else wf.training.model_copy(update={"offset": offset})
    prepare(wf, "encode", progress=False)
    data = TrainingData(wf)
    classes = list(data.classes)
    ys, probs = [], {m: [] for m in wf.models}
    sites = pd.read_csv(wf.dataset_path.parent / "labels.csv").set_index("patient_id")
    patients = [p for p in data.encoded.patients if p in data.label]
    for held_out in ("A", "B"):  # the other site trains (85%) and stops early (15%, stratified)
        train = [p for p in patients if sites.loc[p, "site"] != held_out]
        fit, val = train_test_split(train, test_size=0.15, random_state=0, stratify=[data.label[p] for p in train])
        split = {p: Split.TEST.value for p in patients if sites.loc[p, "site"] == held_out}
        split |= {p: Split.TRAIN.value for p in fit} | {p: Split.VAL.value for p in val}
        part = data.fold(split)
        (tr, ytr), (va, yva) = part.rows(Split.TRAIN), part.rows(Split.VAL)
        test_y = None
        for name in wf.models:
            fitted = fit_model(name, part, (tr, ytr), (va, yva), spec, progress=False)
            test, yte = part.items(Split.TEST, fitted.scaler)
            p = predict_proba(fitted.model, test, fitted.hetero, fitted.dims)
            full = np.zeros((len(yte), len(classes)))  # the fold's classes in the cohort's order
            full[:, [classes.index(c) for c in part.classes]] = p
            probs[name].append(full)
            test_y = [classes.index(part.classes[i]) for i in yte]
        ys.append(np.asarray(test_y))
    return np.concatenate(ys), {m: np.concatenate(v) for m, v in probs.items()}, len(classes)


def table(y: np.ndarray, probs: dict[str, np.ndarray], k: int, seed: int) -> pd.DataFrame:
    from clinicmm.evaluation.bootstrap import intervals, paired_delta, resamples, scores

    idx = resamples(len(y), 1000, seed)
    rows = []
    for name, p in probs.items():
        low, high = intervals(y, p, k, idx)["macro_f1"]
        row = {"model": name, "macro_f1": f"{scores(y, p, k)['macro_f1']:.3f} [{low:.3f}, {high:.3f}]"}
        for ref in ("concat", "logreg"):
            if ref in probs and ref != name:
                d, lo, hi = paired_delta(y, p, probs[ref], k, idx)
                row[f"Δ vs {ref}"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default="concat,kg_gnn,kg_rgcn,logreg,gbt")
    parser.add_argument("--offset", choices=["logreg", "none"], help="training.offset (default: the training default)")
    parser.add_argument(
        "--impute-components", type=int, help="encoders.genomics.impute_components (default: the encoder default)"
    )
    args = parser.parse_args()
    if not (DATA / "mrna.tsv").is_file():
        print(f"skipped: {DATA} lacks the layer tables; run `python workflows/tcga_kipan_prepare.py` first")
        return
    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    models = args.models.split(",")
    ys, pooled = [], {m: [] for m in models}
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            y, probs, k = out_of_site(
                workflow(root, write_cohort(root, args.overlap, seed=r), models, args.impute_components), args.offset
            )
        print(f"\nrepeat {r} (panels and sites drawn with seed {r}; {len(y)} out-of-site patients)")
        print(table(y, probs, k, seed=r).to_string(index=False))
        ys.append(y)
        for m in models:
            pooled[m].append(probs[m])
    if args.repeats > 1:
        print(f"\nall {args.repeats} repeats pooled")
        print(
            table(np.concatenate(ys), {m: np.concatenate(v) for m, v in pooled.items()}, k, seed=0).to_string(
                index=False
            )
        )
    print(f"\noverlap {args.overlap:.0%} of each layer's features; target: graph model - concat >= +0.05 macro-F1")
    print(ceiling_line(np.concatenate(ys), {m: np.concatenate(v) for m, v in pooled.items()}, k))


def ceiling_line(y: np.ndarray, probs: dict[str, np.ndarray], k: int) -> str:
    """How many out-of-site patients every model misclassifies, and the macro-F1 of a model right on all others."""
    from clinicmm.evaluation.bootstrap import scores
    from clinicmm.evaluation.compare import CVResult, ceiling, hard_cases

    res = CVResult([str(c) for c in range(k)], y, np.zeros(len(y), dtype=int), {}, probs)
    hard, consensus = hard_cases(res)
    if not len(hard):
        return "every out-of-site patient is classified right by at least one model"
    concat = f"; concat + 0.05 = {scores(y, probs['concat'], k)['macro_f1'] + 0.05:.3f}" if "concat" in probs else ""
    return (
        f"{len(hard)} of {len(y)} out-of-site patients are misclassified by every model: a model right on every "
        f"other patient would score macro-F1 {ceiling(res, hard, consensus):.3f}{concat}"
    )


if __name__ == "__main__":
    main()
