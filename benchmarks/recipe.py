"""Training recipes on real cohorts: each variant of the neural models' recipe against the default, on the same folds.

``clinicmm compare`` measures models; this measures *recipes*: for each cohort, the same stratified 5-fold split
(seed 0, as ``compare``), the neural models trained under the default ``training:`` block and under each variant,
the logistic regression beside them as the reference. Per variant x model it prints the pooled out-of-fold
macro-F1 [bootstrap 95% CI], the recall of the cohort's rarest class, how many folds stopped learning at once (best
epoch among the first two), the top-label calibration error (ECE, 10 bins) and log loss of the pooled
probabilities (before any temperature), and the paired macro-F1 difference to the default recipe and to logreg
[95% CI, 1,000 resamples]. A recipe becomes the default only when it helps across cohorts, not on one.

Cohorts (all real; ``python workflows/tcga_kipan_prepare.py`` writes the KIPAN tables first):

* ``kipan``: TCGA-KIPAN, 198 patients with mRNA, methylation and miRNA (``workflows/tcga_kipan_dataset.yaml``);
* ``kipan_mirna``: TCGA-KIPAN miRNA only, all 658 patients of the MOGONET tables (``3_tr`` + ``3_te``): a larger
  single-layer cohort, KICH 10%;
* ``demo``: the generated demo (``workflows/demo.yaml``, its own training block; ``make demo`` writes it first).
  Synthetic: a recipe is chosen on the real cohorts, the demo only shows it does not break multimodal fusion;
* a workflow YAML's path: that workflow's cohort and training block (a hospital's own cohort, a generated one).

Variants: ``name:key=value[,key=value]`` overrides of ``training:`` (e.g. ``alone:offset=none`` for the networks
without the logistic-regression offset, ``balanced:class_weights=balanced``). Plain prints, no assertions. Minutes
per cohort and variant on 2 CPU cores.

    .venv/bin/python benchmarks/recipe.py [--cohorts kipan,kipan_mirna,demo] [--models concat,kg_pathway,omics]
        [--variants "alone:offset=none;balanced:class_weights=balanced"] [--fold-seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
REACTOME = REPO.parent / "shared" / "data" / "kg" / "ReactomePathways.gmt"
WORK = REPO / ".clinicmm" / "recipe"


def _prepare_module():
    """``workflows/tcga_kipan_prepare.py``: the KIPAN source layout, feature names and label codes live there."""
    spec = importlib.util.spec_from_file_location("tcga_kipan_prepare", REPO / "workflows" / "tcga_kipan_prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PREP = _prepare_module()
KIPAN_DATA, SOURCE = PREP.DEFAULT_OUT, PREP.DEFAULT_SOURCE


def mirna_cohort(out: Path) -> Path:
    """``out/dataset.yaml``: every KIPAN patient with miRNA (460 + 198), one layer; written once."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "dataset.yaml").is_file():
        names = PREP.feature_names(SOURCE, "3")
        parts, labels = [], []
        for split in ("tr", "te"):
            values = pd.read_csv(SOURCE / f"3_{split}.csv", header=None).set_axis(names, axis=1)
            ids = [f"KIPAN-{split}{i:03d}" for i in range(len(values))]
            parts.append(values.set_index(pd.Index(ids, name="sample_id")))
            codes = pd.read_csv(SOURCE / f"labels_{split}.csv", header=None)[0].map(PREP.CODES)
            labels.append(pd.DataFrame({"patient_id": ids, "cancer_type": codes}))
        pd.concat(parts).to_csv(out / "mirna.tsv", sep="\t", float_format="%.6g")
        pd.concat(labels).to_csv(out / "labels.csv", index=False)
        dataset = {
            "name": "kipan_mirna",
            "labels": {"path": "labels.csv", "patient_column": "patient_id", "label_column": "cancer_type"},
            "genomics": {
                "layers": [
                    {"name": "mirna", "kind": "mirna", "features": "mirna", "path": "mirna.tsv", "unit": "normalized"}
                ]
            },
            "split": {"val": 0.15, "test": 0.2, "seed": 0},
        }
        (out / "dataset.yaml").write_text(yaml.safe_dump(dataset, sort_keys=False))
    return out / "dataset.yaml"


def workflow(cohort: str, models: list[str]):
    """The cohort's workflow (its own workdir under .clinicmm/recipe/), the shipped KIPAN training block."""
    from clinicmm.config import load_workflow

    if cohort == "demo":  # the generated demo (`make demo` writes demo_data/), its own workflow and training block
        wf = load_workflow(REPO / "workflows" / "demo.yaml")
        return wf.model_copy(update={"models": models})
    if cohort.endswith((".yaml", ".yml")):  # any workflow: its own dataset, workdir and training block
        return load_workflow(Path(cohort)).model_copy(update={"models": models})
    root = WORK / cohort
    root.mkdir(parents=True, exist_ok=True)
    dataset = REPO / "workflows" / "tcga_kipan_dataset.yaml" if cohort == "kipan" else mirna_cohort(root / "data")
    wf = {
        "name": f"recipe_{cohort}",
        "dataset": str(dataset),
        "workdir": str(root / "work"),
        "knowledge": [str(REACTOME)],
        "models": models,
        "training": yaml.safe_load((REPO / "workflows" / "tcga_kipan.yaml").read_text())["training"],
        "tracking": {"uri": f"sqlite:///{root}/mlruns/mlflow.db", "experiment": f"recipe-{cohort}"},
    }
    (root / "wf.yaml").write_text(yaml.safe_dump(wf, sort_keys=False))
    return load_workflow(root / "wf.yaml")


def parse_variants(text: str) -> dict[str, dict]:
    variants = {"default": {}}
    for item in filter(None, text.split(";")):
        name, _, pairs = item.partition(":")
        variants[name] = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs.split(","))}
    return variants


def rows(res, variant: str, reference: dict[str, np.ndarray], logreg: np.ndarray, k: int) -> list[dict]:
    from clinicmm.evaluation.bootstrap import intervals, paired_delta, resamples, scores
    from clinicmm.training.calibration import expected_calibration_error, nll

    idx = resamples(len(res.y), 1000, 0)
    rare = int(np.bincount(res.y, minlength=k).argmin())
    folds = pd.DataFrame(res.folds)
    out = []
    for name, probs in res.probs.items():
        low, high = intervals(res.y, probs, k, idx)["macro_f1"]
        row = {
            "variant": variant,
            "model": name,
            "macro_f1": f"{scores(res.y, probs, k)['macro_f1']:.3f} [{low:.3f}, {high:.3f}]",
            f"recall_{res.classes[rare]}": f"{(probs.argmax(1)[res.y == rare] == rare).mean():.3f}",
            "early_folds": int((folds.loc[folds["model"] == name, "best_epoch"] <= 1).sum()),
            "kept_start": int((folds.loc[folds["model"] == name, "best_epoch"] == -1).sum()),  # training.keep_start
            "ece": f"{expected_calibration_error(probs, res.y):.3f}",
            "log_loss": f"{nll(probs, res.y):.3f}",
        }
        for label, ref in (("Δ vs default", reference.get(name)), ("Δ vs logreg", logreg)):
            if ref is not None and ref is not probs:
                d, lo, hi = paired_delta(res.y, probs, ref, k, idx)
                row[label] = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", default="kipan,kipan_mirna")
    parser.add_argument("--models", default="concat,kg_pathway,omics")
    parser.add_argument("--variants", default="alone:offset=none",
                        help="name:key=value[,key=value];... overrides of training: (the default recipe always runs)")  # fmt: skip
    parser.add_argument("--fold-seed", type=int, default=0, help="seed of the stratified 5-fold split")
    args = parser.parse_args()
    if "demo" in args.cohorts.split(",") and not (REPO / "demo_data" / "dataset.yaml").is_file():
        print("skipped: demo_data/ is missing; run `make demo` (or `clinicmm demo-data demo_data`) first")
        return
    kipan = {"kipan", "kipan_mirna"} & set(args.cohorts.split(","))
    if kipan and not (KIPAN_DATA / "mrna.tsv").is_file():
        print(f"skipped: {KIPAN_DATA} lacks the layer tables; run `python workflows/tcga_kipan_prepare.py` first")
        return
    from clinicmm.config import CompareSpec
    from clinicmm.evaluation.compare import cv_data, run_cv
    from clinicmm.pipeline.run import prepare
    from clinicmm.training.data import TrainingData

    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    models, variants = args.models.split(","), parse_variants(args.variants)
    cmp = CompareSpec(folds=5, seed=args.fold_seed, champion=False)
    for cohort in args.cohorts.split(","):
        wf = workflow(cohort, models)
        prepare(wf, "encode", progress=False)
        data = cv_data(TrainingData(wf))
        k = len(data.classes)
        counts = ", ".join(f"{c} {n}" for c, n in zip(data.classes, np.bincount(data.y, minlength=k)))
        print(f"\n## {cohort}: {len(data.y)} patients ({counts}); 5-fold, seed {args.fold_seed}", flush=True)
        table, reference, logreg = [], {}, None
        for variant, overrides in variants.items():
            spec = wf.training.model_copy(update=overrides)
            start = time.perf_counter()
            res = run_cv(data, models, ["logreg"] if logreg is None else [], spec, cmp, progress=False)
            if logreg is None:
                logreg = res.probs["logreg"]
                reference = dict(res.probs)
            table += rows(res, variant, reference if variant != "default" else {}, logreg, k)
            print(f"{variant}: {time.perf_counter() - start:.0f} s", flush=True)
        print(pd.DataFrame(table).fillna("–").to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
