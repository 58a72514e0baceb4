"""A validated ensemble of the trained models (AutoGluon's greedy ensemble selection) against the champion and logreg.

The issue asks for "champion selection by validation (or a validated ensemble), as AutoGluon does". This measures
whether the ensemble would earn its place before anything serves one. On each cohort, the same stratified 5-fold
split as ``clinicmm compare``; in each fold every model of ``--models`` is fitted on the fold's training part and
stops early on its validation part (a closed-form model fits on the training part alone here, so that its
validation probabilities are held out too). From the validation probabilities:

* ``champion``: the model ``primary_model: auto`` registers (:func:`clinicmm.training.champion.choose`);
* ``ensemble``: Caruana et al. (2004) greedy ensemble selection with replacement, AutoGluon's
  ``WeightedEnsemble``: start empty, add the model that most lowers the validation log loss of the averaged
  probabilities, ``--rounds`` times; the weights are the counts;
* ``mean``: every model's probabilities averaged (no weights fitted: the check on the fitted weights);
* ``tied``: the mean of the models the champion rule cannot tell apart (validation macro-F1 within one standard
  error of the best): the champion's band averaged instead of its simplest member taken.

Out-of-fold macro-F1 [bootstrap 95% CI] for each model and the three rows, and the paired difference of the
ensemble and the mean to the champion and to logreg (1,000 resamples). Plain prints, no assertions; minutes per
cohort on 2 CPU cores.

    .venv/bin/python benchmarks/ensemble.py [--cohorts kipan,kipan_mirna,demo] [--models logreg,gbt,concat,kg_pathway,kg_gnn]
        [--fold-seed 0] [--rounds 25]
"""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np
import pandas as pd
from recipe import KIPAN_DATA, REPO, workflow  # the cohorts as recipe.py builds them

from clinicmm.training.calibration import nll


def greedy_weights(y: np.ndarray, probs: list[np.ndarray], rounds: int) -> np.ndarray:
    """Caruana's ensemble selection with replacement on validation log loss: how often each model was picked."""
    counts = np.zeros(len(probs))
    total = np.zeros_like(probs[0])
    for r in range(rounds):
        losses = [nll((total + p) / (r + 1), y) for p in probs]
        best = int(np.argmin(losses))
        counts[best] += 1
        total += probs[best]
    return counts / counts.sum()


def run(data, models: list[str], spec, seed: int, rounds: int):
    from clinicmm.evaluation.compare import fold_split, make_folds
    from clinicmm.training.champion import choose, margin
    from clinicmm.training.data import split_val, to_evidence
    from clinicmm.training.fit import fit_model, predict_proba
    from clinicmm.training.metrics import classification_metrics

    k = len(data.classes)
    rows = [*models, "champion", "ensemble", "mean", "tied"]
    oof = {m: np.full((len(data.y), k), np.nan) for m in rows}
    picks, weights = [], []
    for f, (train, test) in enumerate(make_folds(data.y, data.classes, 5, seed)):
        fit_rows, val_rows = split_val(train, data.y, 0.15, seed + f)
        fold = fold_split(data, fit_rows, val_rows, test)
        part = {n: (data.rows[p], data.y[p]) for n, p in (("fit", fit_rows), ("val", val_rows), ("test", test))}
        val, best = {}, {}
        for name in models:
            fitted = fit_model(name, fold, part["fit"], part["val"], spec, progress=False)
            for key, store in (("val", val), ("test", None)):
                items = to_evidence(fold.encoded, *part[key], fold.kg, fitted.scaler)
                probs = predict_proba(fitted.model, items, fitted.hetero, fitted.dims)
                if store is None:
                    oof[name][test] = probs
                else:
                    store[name] = probs
            metrics = classification_metrics(data.y[val_rows], val[name], data.classes)
            best[name] = {"val_macro_f1": metrics["macro_f1"], "val_loss": nll(val[name], data.y[val_rows]),
                          "n_val": len(val_rows)}  # fmt: skip
        pick = choose(models, best).model
        picks.append(pick)
        oof["champion"][test] = oof[pick][test]
        w = greedy_weights(data.y[val_rows], [val[m] for m in models], rounds)
        weights.append(w)
        oof["ensemble"][test] = sum(wi * oof[m][test] for wi, m in zip(w, models, strict=True))
        oof["mean"][test] = np.mean([oof[m][test] for m in models], axis=0)
        top = max(b["val_macro_f1"] for b in best.values())
        tied = [m for m in models if best[m]["val_macro_f1"] >= top - margin(top, len(val_rows))]
        oof["tied"][test] = np.mean([oof[m][test] for m in tied], axis=0)
        print(f"  fold {f}: champion {pick}; tied {'+'.join(tied)}; ensemble " + ", ".join(
            f"{m} {wi:.2f}" for m, wi in zip(models, w, strict=True) if wi), flush=True)  # fmt: skip
    return oof, picks, np.mean(weights, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", default="kipan,kipan_mirna,demo")
    parser.add_argument("--models", default="logreg,gbt,concat,kg_pathway,kg_gnn")
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    cohorts = args.cohorts.split(",")
    if "demo" in cohorts and not (REPO / "demo_data" / "dataset.yaml").is_file():
        print("skipped: demo_data/ is missing; run `make demo` (or `clinicmm demo-data demo_data`) first")
        return
    if not set(cohorts) <= {"demo"} and not (KIPAN_DATA / "mrna.tsv").is_file():
        print(f"skipped: {KIPAN_DATA} lacks the layer tables; run `python workflows/tcga_kipan_prepare.py` first")
        return
    from clinicmm.evaluation.bootstrap import intervals, paired_delta, resamples, scores
    from clinicmm.evaluation.compare import cv_data
    from clinicmm.pipeline.run import prepare
    from clinicmm.training.data import TrainingData

    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    models = args.models.split(",")
    for cohort in cohorts:
        wf = workflow(cohort, models)
        prepare(wf, "encode", progress=False)
        data = cv_data(TrainingData(wf))
        k = len(data.classes)
        print(f"\n## {cohort}: {len(data.y)} patients; 5-fold, seed {args.fold_seed}", flush=True)
        oof, picks, w = run(data, models, wf.training, args.fold_seed, args.rounds)
        idx = resamples(len(data.y), 1000, 0)
        table = []
        for name, probs in oof.items():
            low, high = intervals(data.y, probs, k, idx)["macro_f1"]
            row = {"model": name, "macro_f1": f"{scores(data.y, probs, k)['macro_f1']:.3f} [{low:.3f}, {high:.3f}]",
                   "log_loss": f"{nll(probs, data.y):.3f}"}  # fmt: skip
            for ref in ("champion", "logreg"):
                if name in ("ensemble", "mean", "tied") and ref in oof:
                    d, lo, hi = paired_delta(data.y, probs, oof[ref], k, idx)
                    row[f"Δ vs {ref}"] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            table.append(row)
        print(pd.DataFrame(table).fillna("–").to_string(index=False))
        print("champion per fold: " + ", ".join(picks))
        print("mean ensemble weights: " + ", ".join(f"{m} {x:.2f}" for m, x in zip(models, w, strict=True)), flush=True)


if __name__ == "__main__":
    main()
