"""How much the graph models' omics -> gene links move their predictions: each trained model scores its test
patients with their gene links and again with every omics link removed (the omics evidence node kept), then without
its gene-set read-in (``training.gene_set_input``: the omics pooled over the graph's gene sets; links and evidence
node kept), beside the same model with the whole omics modality removed for scale.

The same stratified 5 folds as ``clinicmm compare`` and ``benchmarks/recipe.py`` (seed ``--fold-seed``), each model
trained through the one fit path with the cohort's default ``training:`` block (``--offset`` overrides the offset).
Per cohort x model: pooled out-of-fold macro-F1 with links, without links and without omics, the paired macro-F1
difference [bootstrap 95% CI, 1,000 resamples], the share of patients whose predicted class changes and the mean
largest change of a class probability. A model whose links matter changes predictions when they go; leave-one-link-out
explanations (``top_genes``) rank links by exactly this kind of change. Plain prints, no assertions; a few minutes per
cohort on 2 CPU cores.

    .venv/bin/python benchmarks/link_influence.py [--cohorts kipan,demo] [--models kg_gnn,kg_rgcn] [--fold-seed 0]
        [--offset logreg|none]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def _recipe():
    """``benchmarks/recipe.py``: its cohorts (KIPAN, KIPAN miRNA, the demo) and their workflows."""
    spec = importlib.util.spec_from_file_location("recipe", REPO / "benchmarks" / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def without_gene_sets(model):
    """``model`` with its networks' gene-set read-in switched off (a model without one is unchanged)."""
    from clinicmm.fusion.models.wrappers import networks_of

    nets = networks_of(model)
    kept = [getattr(net, "gene_sets", None) for net in nets]
    try:
        for net, read_in in zip(nets, kept):
            if read_in is not None:
                net.gene_sets = None
        yield model
    finally:
        for net, read_in in zip(nets, kept):
            if read_in is not None:
                net.gene_sets = read_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", default="kipan,demo")
    parser.add_argument("--models", default="kg_gnn,kg_rgcn")
    parser.add_argument("--fold-seed", type=int, default=0)
    parser.add_argument(
        "--offset", choices=["logreg", "none"], default=None, help="training.offset (default: the workflow's)"
    )
    args = parser.parse_args()
    recipe = _recipe()
    from clinicmm.config import CompareSpec
    from clinicmm.evaluation.bootstrap import paired_delta, resamples, scores
    from clinicmm.evaluation.compare import cv_data, fold_split, make_folds, split_val
    from clinicmm.pipeline.run import prepare
    from clinicmm.training.data import TrainingData, to_evidence
    from clinicmm.training.fit import fit_model, predict_proba

    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    models, cmp = args.models.split(","), CompareSpec(folds=5, seed=args.fold_seed)
    for cohort in args.cohorts.split(","):
        wf = recipe.workflow(cohort, models)
        prepare(wf, "encode", progress=False)
        data = cv_data(TrainingData(wf))
        spec = wf.training if args.offset is None else wf.training.model_copy(update={"offset": args.offset})
        k, n = len(data.classes), len(data.y)
        variants = ("links", "no links", "no gene sets", "no omics")
        probs = {m: {v: np.zeros((n, k)) for v in variants} for m in models}
        linked = np.zeros(n, dtype=bool)
        for f, (train, test) in enumerate(make_folds(data.y, data.classes, cmp.folds, cmp.seed)):
            fit_rows, val_rows = split_val(train, data.y, cmp.val, cmp.seed + f)
            fold = fold_split(data, fit_rows, val_rows, test)
            part = {key: (data.rows[p], data.y[p]) for key, p in (("fit", fit_rows), ("val", val_rows), ("test", test))}
            for name in models:
                fitted = fit_model(name, fold, part["fit"], part["val"], spec, progress=False)
                items = to_evidence(fold.encoded, *part["test"], fold.kg, fitted.scaler)
                linked[test] = [bool(item.omics_genes) for item in items]
                unlinked = [dataclasses.replace(item, omics_genes=[]) for item in items]
                for variant, rows, without in (("links", items, None), ("no links", unlinked, None),
                                               ("no omics", items, "omics")):  # fmt: skip
                    probs[name][variant][test] = predict_proba(
                        fitted.model, rows, fitted.hetero, fitted.dims, without=without
                    )
                with without_gene_sets(fitted.model) as model:
                    probs[name]["no gene sets"][test] = predict_proba(model, items, fitted.hetero, fitted.dims)
            print(f"{cohort}: fold {f + 1}/5", flush=True)
        idx = resamples(n, 1000, 0)
        print(f"\n## {cohort}: {n} patients, {int(linked.sum())} with omics gene links; 5-fold, seed {args.fold_seed}")
        table = []
        for name in models:
            full = probs[name]["links"]
            for variant in variants[1:]:
                other = probs[name][variant]
                d, lo, hi = paired_delta(data.y, other, full, k, idx)
                table.append({
                    "model": name,
                    "removed": variant.removeprefix("no "),
                    "macro_f1 with": f"{scores(data.y, full, k)['macro_f1']:.3f}",
                    "without": f"{scores(data.y, other, k)['macro_f1']:.3f}",
                    "Δ": f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                    "class changed": f"{(other.argmax(1) != full.argmax(1)).mean():.3f}",
                    "mean max |Δp|": f"{np.abs(other - full).max(1).mean():.4f}",
                })  # fmt: skip
        print(pd.DataFrame(table).to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
