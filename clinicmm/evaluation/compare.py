"""``clinicmm compare``: every model of a workflow on the same stratified patient-level folds.

The labelled, usable patients of the ingest stage are split by ``StratifiedKFold`` (shuffled, seeded); in each fold
every model of ``models:`` is trained by the same loop as ``clinicmm train`` (:func:`clinicmm.training.fit.fit`,
early stopping on a stratified share of the fold's training patients) and scores the held-out patients, with all
modalities and with each modality removed in turn. The baselines of ``compare.baselines`` (``logreg``: the
logistic-regression model, C chosen by inner CV on each fold's training patients) join the table when the workflow's
``models`` lack them, trained by the same path on the same rows. What comes out, under
``workdir/compare/``:

* ``table.csv`` / ``table.md``: per model, mean ± sd over folds of macro-F1, accuracy and one-vs-rest AUROC, the
  same metrics on the pooled out-of-fold predictions with percentile-bootstrap 95% CIs (patients resampled), and
  the paired bootstrap CI of each model's macro-F1 difference to the reference model; ``table.md`` also names the
  networks trained as corrections of logreg (``training.offset``);
* ``ablation.csv`` / ``ablation.md``: pooled out-of-fold macro-F1 with all modalities and without each;
* ``folds.csv``: every model x fold's metrics; ``compare.png`` and ``ablation.png``: the bar plots;
* ``oof.parquet``: the out-of-fold probabilities, one row per patient named by its keyed pseudonym (column
  ``pseudonym``, :func:`clinicmm.privacy.pseudonym.pseudonym` with the workflow's key; local only, never logged);
* a ``champion`` row (``compare.champion``, with ``primary_model: auto``): in each fold the model the workflow would
  register, chosen by :func:`clinicmm.training.champion.choose` on that fold's validation patients;
* ``hard_cases.csv``: the patients every model misclassifies (by pseudonym; local only), with their count and the
  ceiling (macro-F1 of a model right on every other patient) in ``table.md``.

Everything fitted on data is refitted on each fold's training patients: the genomics preprocessor (which genes,
their z-scores, the graph links of the omics) and each feature scaler. Encoders trained on labels
(``encoders.image.train``, ``encoders.text.lora``) saw the labels of every fold's patients: compare refuses them. MLflow: one parent run (``<workflow>-compare``) with a child per model x fold; the tables and plots are the
parent's artifacts. Nothing identifying is logged.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.config import CompareSpec, WorkflowSpec
from clinicmm.config.workflow import AUTO
from clinicmm.csvsafe import write_csv
from clinicmm.errors import ConfigError, StageError
from clinicmm.evaluation.ablation import ablation_row
from clinicmm.evaluation.bootstrap import METRICS  # the metrics bootstrapped, reported per fold and pooled
from clinicmm.keys import MODALITY_NAMES, Split
from clinicmm.training.data import add_class_nodes, split_val
from clinicmm.training.fit import EARLY, best_epoch, trained_epochs

log = logging.getLogger("clinicmm")
REWIRED = "_rewired"  # a graph model's row on the degree-preserving rewired graph (compare.knowledge_ablation)
GRAPH_MODELS = ("kg_gnn", "kg_rgcn", "kg_pathway", "kg_logreg")
CONCAT = "concat"  # the fusion the graph models are compared with in the knowledge ablation
CHAMPION = "champion"  # per fold, the model primary_model: auto would register, chosen on that fold's validation


@dataclass
class CVData:
    """The labelled patients of a cohort as the folds see them: encoded rows (sorted by patient id) and labels."""

    data: object  # clinicmm.training.data.TrainingData the folds are cut from (refitted per fold: TrainingData.fold)
    rows: np.ndarray
    y: np.ndarray
    classes: list[str]
    patients: list[str] = field(default_factory=list)

    @property
    def encoded(self):
        return self.data.encoded


def label_trained(wf: WorkflowSpec) -> list[str]:
    """The workflow's encoders that were trained on patients' labels (their weights saw the labels of every fold)."""
    return [
        key
        for key, on in (
            ("encoders.image.train", wf.encoders.image.train is not None),
            ("encoders.text.lora", wf.encoders.text.lora is not None),
        )
        if on
    ]


def refuse_label_trained(wf: WorkflowSpec, what: str) -> None:
    """``what`` (compare, leave-one-site-out) re-splits the patients, so an encoder trained on the workflow's train
    split has seen the labels of patients that a fold tests on: refuse, naming the fix, rather than score them."""
    keys = label_trained(wf)
    if keys:
        raise ConfigError(
            f"{what} cannot use {' and '.join(keys)}: that encoder was trained on the labels of the "
            f"workflow's train split, so its folds would score patients whose labels trained it. "
            f"Remove {' and '.join(keys)} from a copy of the workflow for {what} (the frozen encoders "
            "are then compared fairly), or evaluate the trained encoder on the test split with "
            "`clinicmm run`."
        )


def cv_data(data) -> CVData:
    """Every usable labelled patient of ``data`` (a :class:`~clinicmm.training.data.TrainingData`) with its class index."""
    splits = {s.value for s in Split}
    labelled = sorted(
        (p, r)
        for r, p in enumerate(data.encoded.patients)
        if data.split.get(p) in splits and isinstance(data.label.get(p), str) and data.label.get(p)
    )
    classes = sorted({data.label[p] for p, _ in labelled})
    add_class_nodes(data.kg, classes)
    y = np.array([classes.index(data.label[p]) for p, _ in labelled], dtype=int)
    return CVData(data, np.array([r for _, r in labelled], dtype=int), y, classes, [p for p, _ in labelled])


def fold_split(data: CVData, fit_rows, val_rows, test_rows):
    """``data.data`` as fold (fit, val, test) sees it: omics preprocessor refitted on the fold's fit patients."""
    split = {
        data.patients[i]: s.value
        for s, rows in ((Split.TRAIN, fit_rows), (Split.VAL, val_rows), (Split.TEST, test_rows))
        for i in rows
    }
    return data.data.fold(split, data.classes)


def make_folds(y: np.ndarray, classes: list[str], folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, shuffled, seeded (train, test) positions; every class needs at least ``folds`` patients."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=len(classes))
    if len(classes) < 2 or counts.min() < folds:
        small = {c: int(n) for c, n in zip(classes, counts) if n < folds}
        raise StageError(
            f"compare needs at least two classes with >= {folds} labelled patients each for {folds} "
            f"folds (too few: {small or 'only one class'}); lower --folds (compare.folds) or add patients."
        )
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


# ---------------------------------------------------------------------------------------------- one fold


@dataclass
class CVResult:
    """Out-of-fold probabilities per model (and per removed modality), fold of each patient, per-fold metrics."""

    classes: list[str]
    y: np.ndarray
    fold: np.ndarray
    present: dict[str, np.ndarray]
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    without: dict[str, dict[str, np.ndarray | None]] = field(default_factory=dict)
    folds: list[dict] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)  # the champion of each fold (compare.champion)


class _NoRuns:
    @contextlib.contextmanager
    def child(self, name: str, fold: int, sizes: dict[str, int]):
        yield None

    def done(self, run, name: str, fold: int, model, history: list[dict], metrics: dict[str, float]) -> None:
        pass


def _fit_and_score(name: str, data: CVData, fold, fit_rows, val_rows, test_rows, spec, run, rewired=None):
    """Train model ``name`` on one fold through the one fit path; (test probs, {modality: probs without it}).

    The early-stopping share (``val_rows``) is held out for the models that stop early; a closed-form model
    (logreg: its penalty chosen by inner CV on the rows it is given) fits on every training row of the fold, and so
    does the linear part of a network that corrects logreg, once the network has stopped (``refit_linear_part``).
    ``<model>_rewired`` is that graph model on ``rewired`` (the knowledge ablation)."""
    from clinicmm.evaluation.ablation import probs_and_without
    from clinicmm.fusion.registry import CLOSED_FORM
    from clinicmm.training.data import to_evidence
    from clinicmm.training.fit import fit_model, refit_linear_part

    on_epoch = None
    if run is not None:
        from clinicmm.tracking.runs import epoch_logger

        on_epoch = epoch_logger(run)
    if name.endswith(REWIRED):
        name, fold = name.removesuffix(REWIRED), copy.copy(fold)
        fold.kg = rewired
    if name in CLOSED_FORM:
        fit_rows, val_rows = np.concatenate([fit_rows, val_rows]), val_rows[:0]
    part = {k: (data.rows[p], data.y[p]) for k, p in (("fit", fit_rows), ("val", val_rows), ("test", test_rows))}
    fitted = fit_model(name, fold, part["fit"], part["val"], spec, on_epoch, progress=False)
    if len(val_rows):  # a corrected network's linear part, closed-form, fits on every training row as logreg does
        both = np.concatenate([fit_rows, val_rows])
        refit_linear_part(fitted, fold, (data.rows[both], data.y[both]), spec)
    test = to_evidence(fold.encoded, *part["test"], fold.kg, fitted.scaler)
    probs, without = probs_and_without(fitted.model, test, fitted.hetero, fitted.dims)
    return probs, without, fitted.model, fitted.history


def _val_best(name: str, history: list[dict], data: CVData, fold, fit_rows, val_rows, spec) -> dict:
    """The row :func:`clinicmm.training.champion.choose` reads for ``name`` in one fold: its lowest-validation-loss
    epoch, as the train stage records it. A closed-form model was fitted on the fit and validation rows together, so
    it has no validation score: it is fitted again on the fit rows alone (as the train stage fits it) and scored on
    the validation rows."""
    from clinicmm.fusion.registry import CLOSED_FORM
    from clinicmm.training.fit import fit_model

    if name in CLOSED_FORM and len(val_rows):
        fit, val = ((data.rows[p], data.y[p]) for p in (fit_rows, val_rows))
        history = fit_model(name, fold, fit, val, spec, progress=False).history
    scored = [h for h in history if "val_loss" in h and h["val_loss"] == h["val_loss"]]
    return (min(scored, key=lambda h: h["val_loss"]) | {"n_val": len(val_rows)}) if scored else {}


def _fold_metrics(y: np.ndarray, probs: np.ndarray, without: dict, classes: list[str]) -> dict[str, float]:
    """One model's test metrics in one fold, and its macro-F1 with each modality removed."""
    from clinicmm.training.metrics import classification_metrics

    metrics = {m: v for m, v in classification_metrics(y, probs, classes).items() if m in METRICS}
    return metrics | {
        f"macro_f1_{m}": v for m, v in ablation_row(y, probs, without).items() if m.startswith("minus_") and v == v
    }


def _store(res: CVResult, name: str, test: np.ndarray, probs: np.ndarray, without: dict) -> None:
    res.probs[name][test] = probs
    for m, p in without.items():  # no test patient of this fold has m: removing it changes nothing
        if res.without[name][m] is None:
            res.without[name][m] = np.full_like(res.probs[name], np.nan)
        res.without[name][m][test] = probs if p is None else p


def run_cv(
    data: CVData,
    models: list[str],
    baselines: list[str],
    spec,
    cmp: CompareSpec,
    runs=None,
    progress: bool = True,
    primary: str = AUTO,
) -> CVResult:
    """Every model and baseline on the same folds; ``runs`` (see :class:`CompareRuns`) logs each model x fold.

    With ``compare.champion`` (and ``primary`` = ``auto``, two or more ``models``) a ``champion`` row follows: in each
    fold the model of ``models`` the workflow would register, chosen by :func:`clinicmm.training.champion.choose` on
    that fold's validation patients, with that model's test predictions."""
    from tqdm.auto import tqdm

    from clinicmm.training.champion import choose

    runs = runs or _NoRuns()
    folds = make_folds(data.y, data.classes, cmp.folds, cmp.seed)
    names = list(dict.fromkeys([*models, *baselines]))  # a baseline the workflow also lists is run once
    rewired = None
    if cmp.knowledge_ablation:  # each graph model again on a degree-preserving rewired graph
        names += [f"{n}{REWIRED}" for n in models if n in GRAPH_MODELS]
        rewired = data.data.kg.rewired(cmp.seed)
    present = {m: data.encoded.has(m)[data.rows] for m in MODALITY_NAMES}
    champion = cmp.champion and primary == AUTO and len(models) >= 2
    rows = [*names, CHAMPION] if champion else names
    res = CVResult(
        data.classes,
        data.y,
        np.full(len(data.y), -1),
        present,
        {n: np.full((len(data.y), len(data.classes)), np.nan) for n in rows},
        {n: {m: None for m in MODALITY_NAMES} for n in rows},
    )
    bar = tqdm(total=len(folds) * len(names), desc="compare", disable=not progress)
    for k, (train, test) in enumerate(folds):
        res.fold[test] = k
        fit_rows, val_rows = split_val(train, data.y, cmp.val, cmp.seed + k)
        sizes = {"n_train": len(fit_rows), "n_val": len(val_rows), "n_test": len(test)}
        fold = fold_split(data, fit_rows, val_rows, test)
        outputs, val_best = {}, {}
        for name in names:
            bar.set_postfix_str(f"fold {k + 1}/{len(folds)} {name}")
            with runs.child(name, k, sizes) as run:
                probs, without, model, history = _fit_and_score(
                    name, data, fold, fit_rows, val_rows, test, spec, run, rewired
                )
                metrics = _fold_metrics(data.y[test], probs, without, data.classes)
                runs.done(run, name, k, model, history, metrics)
            _store(res, name, test, probs, without)
            outputs[name] = probs, without, metrics
            chosen_on = {}  # the validation scores the champion was chosen by (folds.csv: val_macro_f1, val_loss)
            if champion and name in models:
                val_best[name] = _val_best(name, history, data, fold, fit_rows, val_rows, spec)
                chosen_on = {f"val_{m}": val_best[name].get(f"val_{m}") for m in ("macro_f1", "loss")}
            res.folds.append(
                {
                    "model": name,
                    "fold": k,
                    **sizes,
                    **metrics,
                    "epochs": trained_epochs(history),  # without the start's row (training.keep_start)
                    "best_epoch": best_epoch(history),
                    **chosen_on,
                }
            )
            bar.update()
        if champion:
            pick = choose(list(models), val_best, primary).model
            res.chosen.append(pick)
            _store(res, CHAMPION, test, *outputs[pick][:2])
            res.folds.append({"model": CHAMPION, "fold": k, **sizes, **outputs[pick][2], "chosen": pick})
    bar.close()
    return res


# ----------------------------------------------------------------------------------------------- tables


def reference_model(names: list[str], cmp: CompareSpec) -> str:
    """The model every other one is compared against (``compare.reference``, else logreg, concat, the first)."""
    if cmp.reference is not None:
        if cmp.reference not in names:
            raise ConfigError(
                f"compare.reference {cmp.reference!r} is not among the compared models {names}; "
                "name one of them or leave it out."
            )
        return cmp.reference
    return next((n for n in ("logreg", "concat") if n in names), names[0])


def summarise(res: CVResult, cmp: CompareSpec, reference: str) -> pd.DataFrame:
    """Per model: mean ± sd over folds, pooled estimate with bootstrap 95% CI, paired delta to ``reference``."""
    from clinicmm.evaluation import bootstrap

    k, folds = len(res.classes), pd.DataFrame(res.folds)
    idx = bootstrap.resamples(len(res.y), cmp.bootstrap, cmp.seed)
    rows = []
    for name, probs in res.probs.items():
        per_fold = folds[folds["model"] == name]
        row = {"model": name, "folds": len(per_fold), "n": len(res.y)}
        pooled, ci = bootstrap.scores(res.y, probs, k), bootstrap.intervals(res.y, probs, k, idx)
        for m in METRICS:
            row |= {
                f"{m}_mean": per_fold[m].mean(),
                f"{m}_sd": per_fold[m].std(ddof=1),
                f"{m}_pooled": pooled[m],
                f"{m}_ci_low": ci[m][0],
                f"{m}_ci_high": ci[m][1],
            }
        delta = bootstrap.paired_delta(res.y, probs, res.probs[reference], k, idx)
        row |= {"reference": reference, "delta_macro_f1": delta[0], "delta_ci_low": delta[1], "delta_ci_high": delta[2]}
        rows.append(row)
    return pd.DataFrame(rows)


def knowledge_table(res: CVResult, cmp: CompareSpec) -> pd.DataFrame:
    """Per graph model: pooled macro-F1 on the real graph and on the rewired one, and the paired difference with its
    bootstrap 95% CI (positive: the biology the edges carry helps; an interval over 0: no evidence it does)."""
    from clinicmm.evaluation import bootstrap

    k, idx = len(res.classes), bootstrap.resamples(len(res.y), cmp.bootstrap, cmp.seed)
    rows = []
    for name in [n for n in res.probs if f"{n}{REWIRED}" in res.probs]:
        real, scrambled = res.probs[name], res.probs[f"{name}{REWIRED}"]
        delta = bootstrap.paired_delta(res.y, real, scrambled, k, idx)
        row = {
            "model": name,
            "macro_f1_graph": bootstrap.scores(res.y, real, k)["macro_f1"],
            "macro_f1_rewired": bootstrap.scores(res.y, scrambled, k)["macro_f1"],
            "delta": delta[0],
            "delta_ci_low": delta[1],
            "delta_ci_high": delta[2],
        }
        if CONCAT in res.probs:  # the same fusion without the graph: what the knowledge adds to it
            vs = bootstrap.paired_delta(res.y, real, res.probs[CONCAT], k, idx)
            row |= {"delta_concat": vs[0], "delta_concat_ci_low": vs[1], "delta_concat_ci_high": vs[2]}
        rows.append(row)
    return pd.DataFrame(rows)


def knowledge_markdown(table: pd.DataFrame, folds: int, b: int) -> str:
    """The knowledge ablation as markdown: real graph, rewired graph, paired difference [95% CI]."""
    lines = [
        f"### Knowledge ablation: each graph model on the real graph and on a degree-preserving rewired copy "
        f"({folds}-fold pooled macro-F1, paired bootstrap over {b} resamples)",
        "",
        "| model | real graph | rewired graph | Δ [95% CI] | Δ vs concat [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['model']} | {r['macro_f1_graph']:.3f} | {r['macro_f1_rewired']:.3f} | "
            f"{paired_text(r, 'delta')} | {paired_text(r, 'delta_concat')} |"
        )
    return "\n".join(lines) + "\n"


def paired_text(row, key: str) -> str:
    """``+0.012 [-0.030, +0.051]`` of a row's paired difference ``key``; ``–`` where it was not computed."""
    if key not in row or row[key] != row[key]:
        return "–"
    return f"{row[key]:+.3f} [{row[f'{key}_ci_low']:+.3f}, {row[f'{key}_ci_high']:+.3f}]"


def hard_cases(res: CVResult) -> tuple[np.ndarray, np.ndarray]:
    """The patients every compared model misclassifies out of fold (positions), and the class most of them predicted
    for each. With several models these are worth a look before any tuning: a label error, a mixed or reclassified
    tumour, or a subtype none of the inputs separates; tuning rarely gets them right."""
    names = [n for n in res.probs if not n.endswith(REWIRED) and n != CHAMPION]
    if len(names) < 2:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    predicted = np.stack([res.probs[n].argmax(1) for n in names])
    hard = np.flatnonzero((predicted != res.y).all(0))
    votes = [np.bincount(predicted[:, i], minlength=len(res.classes)) for i in hard]
    return hard, np.array([v.argmax() for v in votes], dtype=int)


def ceiling(res: CVResult, hard: np.ndarray, consensus: np.ndarray) -> float:
    """Pooled macro-F1 of predictions right on every patient except the hard cases, which keep the class most models
    gave them: what a model scores that fixes every error some model avoided but none of the hard ones."""
    from sklearn.metrics import f1_score

    best = res.y.copy()
    best[hard] = consensus
    return float(f1_score(res.y, best, labels=list(range(len(res.classes))), average="macro", zero_division=0))


def hard_markdown(res: CVResult, hard: np.ndarray, consensus: np.ndarray, top: float | None) -> str:
    """One paragraph for table.md: how many patients no model gets right, by true -> predicted class, and the
    ceiling ``top`` they leave (:func:`ceiling`)."""
    if not len(hard):
        return ""
    pairs = pd.Series([f"{res.classes[res.y[i]]} → {res.classes[c]}" for i, c in zip(hard, consensus)])
    counts = ", ".join(f"{pair} {n}" for pair, n in pairs.value_counts().items())
    return (
        f"\n**{len(hard)} of {len(res.y)} patients are misclassified by every model** ({counts}; true → most "
        f"predicted). A model right on every other patient would score pooled macro-F1 "
        f"{top:.3f}. Review them before tuning (label, histology, sample swap): "
        "`hard_cases.csv` names them by pseudonym (local only).\n"
    )


def ablation_table(res: CVResult) -> pd.DataFrame:
    """Pooled out-of-fold macro-F1 per model with all modalities and without each (NaN: no patient has it)."""
    rows = []
    for name, probs in res.probs.items():
        without = {m: res.without[name][m] if res.present[m].any() else None for m in MODALITY_NAMES}
        rows.append({"model": name, "n": len(res.y), **ablation_row(res.y, probs, without)})
    return pd.DataFrame(rows)


def table_markdown(table: pd.DataFrame, folds: int, b: int) -> str:
    """The comparison table as markdown (mean ± sd over folds; pooled estimate [95% CI]; paired delta)."""
    ref = table["reference"].iloc[0]
    head = [
        "model",
        "macro-F1",
        "accuracy",
        "AUROC",
        "pooled macro-F1 [95% CI]",
        "pooled accuracy [95% CI]",
        "pooled AUROC [95% CI]",
        f"Δ macro-F1 vs {ref} [95% CI]",
    ]
    lines = [
        f"### {folds}-fold stratified CV (n={int(table['n'].iloc[0])}): mean ± sd over folds; pooled "
        f"out-of-fold with {b} bootstrap resamples",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for _, r in table.iterrows():
        cells = [r["model"]] + [f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_sd']:.3f}" for m in METRICS]
        cells += [f"{r[f'{m}_pooled']:.3f} [{r[f'{m}_ci_low']:.3f}, {r[f'{m}_ci_high']:.3f}]" for m in METRICS]
        cells.append(
            "–"
            if r["model"] == ref
            else f"{r['delta_macro_f1']:+.3f} [{r['delta_ci_low']:+.3f}, {r['delta_ci_high']:+.3f}]"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- MLflow


class CompareRuns:
    """One parent run per compare, a finished child per model x fold (the workflow's runs.json is not touched)."""

    def __init__(self, wf: WorkflowSpec, cohort, out: Path):
        self.wf, self.cohort, self.out = wf, cohort, out
        self.parent = None

    @contextlib.contextmanager
    def parent_run(self):
        """The workflow run's opening (:func:`clinicmm.tracking.runs.top_run`), named ``<workflow>-compare``."""
        from clinicmm.tracking.runs import top_run

        with top_run(self.wf, self.cohort, f"{self.wf.name}-compare", "compare") as (run, _, _):
            self.parent = run
            yield run

    @contextlib.contextmanager
    def child(self, name: str, fold: int, sizes: dict[str, int]):
        import mlflow

        with mlflow.start_run(run_name=f"{name}.fold{fold}", nested=True) as run:
            mlflow.set_tags({"clinicmm.model": name, "clinicmm.fold": str(fold), "clinicmm.stage": "compare"})
            mlflow.log_params({"fold": fold, **sizes})
            yield run

    def done(self, run, name: str, fold: int, model, history: list[dict], metrics: dict[str, float]) -> None:
        import mlflow

        from clinicmm.tracking.runs import log_training

        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if v == v})
        if history:
            folder = self.out / "curves" / f"{name}.fold{fold}"
            folder.mkdir(parents=True, exist_ok=True)
            log_training(run, name, model, history, folder)
        else:
            mlflow.log_param("model", name)


# ------------------------------------------------------------------------------------------------ entry


def compare(wf: WorkflowSpec, data=None, folds: int | None = None, progress: bool = True) -> CompareResult:
    """Cross-validate every model of ``wf`` (and the baselines); write, log and return the tables.

    ``data``: the workflow's :class:`~clinicmm.training.data.TrainingData` (loaded when not given; ingest and encode
    must have run: :func:`clinicmm.pipeline.run.compare` runs them first when they are stale)."""
    import mlflow

    from clinicmm.privacy.pseudonym import workflow_key
    from clinicmm.tracking.compare_plots import ablation_png, cv_bars_png
    from clinicmm.training.data import TrainingData

    cmp = wf.compare if folds is None else wf.compare.model_copy(update={"folds": folds})
    if folds is not None:
        wf = wf.model_copy(update={"compare": cmp})
    refuse_label_trained(wf, "compare")
    data = cv_data(data if data is not None else TrainingData(wf))
    names = list(dict.fromkeys([*wf.models, *cmp.baselines]))
    reference = reference_model(names, cmp)
    out = wf.work / "compare"
    out.mkdir(parents=True, exist_ok=True)
    tracker = CompareRuns(wf, data.data.cohort, out)
    with tracker.parent_run() as parent:
        res = run_cv(data, list(wf.models), list(cmp.baselines), wf.training, cmp, tracker, progress, wf.primary_model)
        table, ablation, knowledge = summarise(res, cmp, reference), ablation_table(res), knowledge_table(res, cmp)
        hard, consensus = hard_cases(res)
        top = ceiling(res, hard, consensus) if len(hard) else None
        write_csv(pd.DataFrame(res.folds), out / "folds.csv", index=False)
        files = ["table.csv", "table.md", "ablation.csv", "ablation.md", "folds.csv", "compare.png", "ablation.png"]
        if len(knowledge):
            write_csv(knowledge, out / "knowledge_ablation.csv", index=False)
            (out / "knowledge_ablation.md").write_text(knowledge_markdown(knowledge, cmp.folds, cmp.bootstrap))
            files += ["knowledge_ablation.csv", "knowledge_ablation.md"]
        write_csv(table, out / "table.csv", index=False)
        write_csv(ablation, out / "ablation.csv", index=False)
        (out / "table.md").write_text(
            table_markdown(table, cmp.folds, cmp.bootstrap)
            + offset_markdown(list(table["model"]), wf.training.offset)
            + ensemble_markdown(list(table["model"]), wf.training.ensemble)
            + champion_markdown(res)
            + hard_markdown(res, hard, consensus, top)
        )
        (out / "ablation.md").write_text(_ablation_md(ablation, cmp.folds))
        cv_bars_png(table, cmp.folds, out / "compare.png", f"{wf.name}")
        ablation_png(ablation, MODALITY_NAMES, out / "ablation.png")
        _write_oof(res, data, out / "oof.parquet", workflow_key(wf))
        _write_hard(res, data, hard, consensus, out / "hard_cases.csv", workflow_key(wf))
        for name in files:
            mlflow.log_artifact(str(out / name), "compare")
        mlflow.log_metrics(
            {
                f"cv_{m}.{r['model']}": r[f"{m}_pooled"]
                for _, r in table.iterrows()
                for m in METRICS
                if r[f"{m}_pooled"] == r[f"{m}_pooled"]
            }
        )
        folds_table = pd.DataFrame(res.folds)

        def folds_where(mask: pd.Series) -> dict[str, int]:  # model -> its folds where mask holds, where any do
            return {m: int(n) for m, n in mask.groupby(folds_table["model"]).sum().items() if n}

        early = folds_where(folds_table["best_epoch"] <= EARLY)
        kept = folds_where(folds_table["best_epoch"] == -1)  # training.keep_start: it kept the linear model
        mlflow.log_metric("cv_hard_cases", len(hard))
        result = CompareResult(
            table,
            ablation,
            out,
            parent.info.run_id,
            cmp.folds,
            len(data.y),
            data.classes,
            reference,
            knowledge,
            early,
            res.chosen,
            len(hard),
            top,
            kept,
        )
        (out / "summary.json").write_text(json.dumps(result.summary(), indent=1))
    return result


@dataclass
class CompareResult:
    """What ``clinicmm compare`` prints: the tables, where they are written, the parent run."""

    table: pd.DataFrame
    ablation: pd.DataFrame
    out: Path
    parent_run: str
    folds: int
    patients: int
    classes: list[str]
    reference: str
    knowledge: pd.DataFrame | None = None  # compare.knowledge_ablation: each graph model against its rewired graph
    early: dict[str, int] = field(default_factory=dict)  # model -> folds whose best epoch was one of the first two
    chosen: list[str] = field(default_factory=list)  # the champion of each fold (the table's champion row)
    hard: int = 0  # patients every model misclassifies (hard_cases.csv)
    ceiling: float | None = None  # pooled macro-F1 if every other patient were right
    kept_start: dict[str, int] = field(default_factory=dict)  # model -> folds where it kept logreg (keep_start)

    def summary(self) -> dict:
        return {
            "stopped_at_once": self.early,
            "kept_logreg": self.kept_start,
            "champion_per_fold": self.chosen,
            "hard_cases": self.hard,
            "ceiling_macro_f1": self.ceiling,
            "parent_run": self.parent_run,
            "folds": self.folds,
            "patients": self.patients,
            "classes": self.classes,
            "reference": self.reference,
        }


def _ablation_md(ablation: pd.DataFrame, folds: int) -> str:
    from clinicmm.evaluation.ablation import markdown

    return markdown(
        ablation, f"Missing modalities: pooled out-of-fold macro-F1 over {folds} folds (n={int(ablation['n'].iloc[0])})"
    )


def champion_picks(chosen: list[str]) -> str:
    """``kg_rgcn in 2, attention in 1``: how many folds chose each model, most chosen first (table.md, the CLI)."""
    return ", ".join(f"{m} in {n}" for m, n in Counter(chosen).most_common())


def champion_markdown(res: CVResult) -> str:
    """Which model each fold's champion row took (table.md)."""
    if not res.chosen:
        return ""
    picks = champion_picks(res.chosen)
    return (
        f"\n`{CHAMPION}`: in each fold the model `primary_model: auto` registers, chosen on that fold's validation "
        f"patients and scored on its test patients (chosen: {picks} of {len(res.chosen)} folds).\n"
    )


def is_correction(row: str, offset: str) -> bool:
    """Whether a report row (a model, or a graph model on the rewired graph) is a network trained as a correction of
    logreg under ``training.offset`` (:func:`clinicmm.fusion.registry.corrects_logreg`)."""
    from clinicmm.fusion.registry import corrects_logreg

    return corrects_logreg(row.removesuffix(REWIRED), offset)


def offset_markdown(models: list[str], offset: str) -> str:
    """Which rows are networks trained as corrections of logreg (``training.offset``), for table.md: their scores
    start from logreg's, which a reader comparing them with the logreg row should know."""
    corrected = [m for m in models if is_correction(m, offset)]
    if not corrected:
        return ""
    return (
        f"\nCorrections of logreg (`training.offset: {offset}`; logreg's logits plus the network's): "
        f"{', '.join(corrected)}. The other rows are trained alone.\n"
    )


def ensemble_markdown(models: list[str], ensemble: int) -> str:
    """Which rows are seed ensembles (``training.ensemble`` > 1), for table.md: each averages that many networks,
    which a reader comparing them with a single network or the closed-form rows should know."""
    from clinicmm.fusion.registry import CLOSED_FORM, MODELS

    networks = [m for m in models if m.removesuffix(REWIRED) in MODELS and m.removesuffix(REWIRED) not in CLOSED_FORM]
    if ensemble <= 1 or not networks:
        return ""
    return (
        f"\nSeed ensembles (`training.ensemble: {ensemble}`; the mean probability of {ensemble} networks from "
        f"their own initial weights): {', '.join(networks)}. The other rows are one deterministic fit.\n"
    )


def _write_hard(res: CVResult, data: CVData, hard: np.ndarray, consensus: np.ndarray, path: Path, key: bytes) -> None:
    """The patients no model gets right, by keyed pseudonym (local only, never logged), with the most predicted class."""
    from clinicmm.privacy.pseudonym import pseudonym

    frame = pd.DataFrame(
        {
            "pseudonym": [pseudonym(data.patients[i], key) for i in hard],
            "label": [res.classes[res.y[i]] for i in hard],
            "most_predicted": [res.classes[c] for c in consensus],
            "fold": res.fold[hard],
        }
    )
    write_csv(frame, path, index=False)


def _write_oof(res: CVResult, data: CVData, path: Path, key: bytes) -> None:
    """Out-of-fold probabilities for re-analysis (never logged to MLflow), each patient named by its keyed pseudonym,
    not its id: join them to your ids with ``pseudonym(patient_id, key)`` of :mod:`clinicmm.privacy.pseudonym`."""
    from clinicmm.privacy.pseudonym import pseudonym

    frame = pd.DataFrame(
        {
            "pseudonym": [pseudonym(p, key) for p in data.patients],
            "label": [res.classes[i] for i in res.y],
            "fold": res.fold,
        }
    )
    for name, probs in res.probs.items():
        for j, c in enumerate(res.classes):
            frame[f"{name}.prob_{c}"] = probs[:, j]
    frame.to_parquet(path, index=False)
