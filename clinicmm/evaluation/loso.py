"""Leave-one-site-out: each site in turn is the test set of models trained on the other sites.

Asked for with ``split.leave_one_site_out: true`` (and ``labels.site_column``) in the dataset YAML; the
evaluate stage then writes ``workdir/evaluate/sites/leave_one_site_out.csv`` (and ``.md``) with one row per
(site, model) and logs it to a ``leave_one_site_out`` MLflow run. Everything fitted on training data is
refitted per fold on that fold's train split: the genomics preprocessor, the standardiser and the model.
Embeddings come from the encode stage: the image and text encoders must be frozen (an encoder trained on
labels, ``encoders.image.train`` or ``encoders.text.lora``, saw the held-out sites' labels: refused).
"""

from __future__ import annotations

import logging

import pandas as pd

from clinicmm.csvsafe import write_csv
from clinicmm.keys import Col, Split

log = logging.getLogger("clinicmm")


def fold_data(data, fold: pd.DataFrame):
    """``data`` (a :class:`~clinicmm.training.data.TrainingData`) as one site fold sees it: the fold's split, the
    classes of its train split, and the omics refitted on it (:meth:`TrainingData.fold`)."""
    return data.fold(dict(zip(fold[Col.PATIENT], fold[Col.SPLIT])))


def _unseen(data) -> int:
    """Test patients whose label the fold's train split lacks (left out of the scores)."""
    return sum(
        1 for p in data.encoded.patients if data.split.get(p) == Split.TEST and data.label.get(p) not in data.classes
    )


def _one_fold(site: str, data, progress: bool) -> list[dict]:
    from clinicmm.training.fit import fit_model, predict_proba
    from clinicmm.training.metrics import classification_metrics

    (tr, ytr), (va, yva), (te, _) = (data.rows(s) for s in (Split.TRAIN, Split.VAL, Split.TEST))
    unknown, out = _unseen(data), []
    for name in data.wf.models:
        fitted = fit_model(name, data, (tr, ytr), (va, yva), data.wf.training, progress=progress)
        test, yte = data.items(Split.TEST, fitted.scaler)
        probs = predict_proba(fitted.model, test, fitted.hetero, fitted.dims)
        metrics = classification_metrics(yte, probs, data.classes) if te else {}
        out.append(
            {
                "site": site,
                "model": name,
                "n_train": len(tr),
                "n_val": len(va),
                "n_test": len(te),
                "n_test_label_unseen": unknown,
                **{k: metrics.get(k, float("nan")) for k in ("accuracy", "macro_f1", "auroc_ovr")},
            }
        )
        log.info("leave-one-site-out %s, %s: macro-F1 %.3f on %d patients", site, name, out[-1]["macro_f1"], len(te))
    return out


def leave_one_site_out(wf, progress: bool = False, data=None) -> pd.DataFrame:
    """Train every model once per held-out site; one row per (site, model), written and logged. ``data``: the
    evaluate stage's :class:`~clinicmm.training.data.TrainingData` (loaded when not given)."""
    from clinicmm.config import load_dataset
    from clinicmm.evaluation.compare import refuse_label_trained
    from clinicmm.evaluation.robustness import table_markdown
    from clinicmm.ingest.sites import site_folds
    from clinicmm.tracking import runs
    from clinicmm.training.data import TrainingData

    refuse_label_trained(wf, "leave-one-site-out")
    spec = load_dataset(wf.dataset_path)
    data = data if data is not None else TrainingData(wf)
    rows = [
        r
        for site, fold in site_folds(spec, data.cohort.manifest)
        for r in _one_fold(site, fold_data(data, fold), progress)
    ]
    table = pd.DataFrame(rows)
    out = wf.work / "evaluate" / "sites"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "leave_one_site_out.csv", index=False)
    (out / "leave_one_site_out.md").write_text(table_markdown(table, list(table.columns)))
    metrics = {f"{r.model}.site_{r.site}.macro_f1": r.macro_f1 for r in table.itertuples()}
    metrics |= {f"{m}.mean_site_macro_f1": v for m, v in table.groupby("model")["macro_f1"].mean().items()}
    runs.log_stage(
        wf,
        "leave_one_site_out",
        metrics,
        {"site_column": spec.labels.site_column, "sites": table["site"].nunique()},
        files={"sites": [out / "leave_one_site_out.csv", out / "leave_one_site_out.md"]},
    )
    return table


def wanted(wf) -> bool:
    """Whether the workflow's dataset asks for leave-one-site-out (the config checks it names a site column)."""
    from clinicmm.config import load_dataset

    return load_dataset(wf.dataset_path).split.leave_one_site_out
