"""Leave-one-site-out: each site in turn is the test set of models trained on the other sites.

Asked for with ``split.leave_one_site_out: true`` (and ``labels.site_column``) in the dataset YAML; the
evaluate stage then writes ``workdir/evaluate/sites/leave_one_site_out.csv`` (and ``.md``) with one row per
(site, model) and logs it to a ``leave_one_site_out`` MLflow run. Everything fitted on training data is
refitted per fold on that fold's train split: the genomics preprocessor, the standardiser and the model.
Embeddings come from the encode stage (the image and text encoders are frozen: nothing in them was fitted).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd

from clinicmm.keys import Col, Modality, Node, Split

log = logging.getLogger("clinicmm")


def _refit_omics(wf, cohort, encoded, kg):
    """``encoded`` with the omics block recomputed by a preprocessor fitted on this fold's train split."""
    from clinicmm.evidence import Featurizer
    from clinicmm.keys import HAS
    from clinicmm.workflow import fit_genomics

    pre = fit_genomics(wf, cohort)
    if pre is None:
        return encoded
    present = cohort.manifest.set_index(Col.PATIENT.value).loc[encoded.patients, HAS[Modality.OMICS]].to_numpy(dtype=bool)
    vectors, links, _ = Featurizer(wf.encoders, kg, pre).omics(encoded.patients, cohort.expression, cohort.mutations, present)
    out = copy.copy(encoded)
    out.vectors = {**encoded.vectors, Modality.OMICS.value: vectors}
    out.links = {**encoded.links, Modality.OMICS.value: links}
    return out


def _fold_rows(encoded, fold: pd.DataFrame):
    split = dict(zip(fold[Col.PATIENT], fold[Col.SPLIT]))
    label = dict(zip(fold[Col.PATIENT], fold[Col.LABEL]))
    classes = sorted({label[p] for p in encoded.patients if split.get(p) == Split.TRAIN})
    idx = {c: i for i, c in enumerate(classes)}

    def rows(s: Split) -> tuple[list[int], list[int]]:
        r = [i for i, p in enumerate(encoded.patients) if split.get(p) == s and label.get(p) in idx]
        return r, [idx[label[encoded.patients[i]]] for i in r]

    unknown = sum(1 for p in encoded.patients if split.get(p) == Split.TEST and label.get(p) not in idx)
    return classes, rows, unknown


def _one_fold(wf, site: str, fold: pd.DataFrame, cohort, encoded, kg, progress: bool) -> list[dict]:
    import torch

    from clinicmm.fusion.registry import build_model
    from clinicmm.training.data import Standardizer, class_nodes, dims_of, to_evidence
    from clinicmm.training.fit import fit, predict_proba
    from clinicmm.training.metrics import classification_metrics

    fold_cohort = copy.copy(cohort)
    fold_cohort.manifest = fold
    enc = _refit_omics(wf, fold_cohort, encoded, kg)
    classes, rows, unknown = _fold_rows(enc, fold)
    kg.ensure_nodes(Node.CANCER, classes)
    (tr, ytr), (va, yva), (te, yte) = rows(Split.TRAIN), rows(Split.VAL), rows(Split.TEST)
    scaler = Standardizer.fit(enc.vectors, np.array(tr))
    items = {s: to_evidence(enc, r, y, kg, scaler) for s, (r, y) in (("train", (tr, ytr)), ("val", (va, yva)), ("test", (te, yte)))}
    dims, hetero, t = dims_of(enc.vectors), kg.to_hetero(), wf.training
    out = []
    for name in wf.models:
        torch.manual_seed(t.seed)
        model = build_model(name, dims, len(classes), hetero, class_nodes(kg, classes), t.hidden, t.dropout)
        model, _ = fit(model, items["train"], items["val"], hetero, dims, t, len(classes), None, progress)
        metrics = classification_metrics(np.array(yte), predict_proba(model, items["test"], hetero, dims), classes) if te else {}
        out.append({"site": site, "model": name, "n_train": len(tr), "n_val": len(va), "n_test": len(te), "n_test_label_unseen": unknown,
                    **{k: metrics.get(k, float("nan")) for k in ("accuracy", "macro_f1", "auroc_ovr")}})
        log.info("leave-one-site-out %s, %s: macro-F1 %.3f on %d patients", site, name, out[-1]["macro_f1"], len(te))
    return out


def leave_one_site_out(wf, progress: bool = False) -> pd.DataFrame:
    """Train every model once per held-out site; one row per (site, model), written and logged."""
    from clinicmm.cohort import Cohort
    from clinicmm.config import load_dataset
    from clinicmm.evaluation.robustness import table_markdown
    from clinicmm.evaluation.sites import site_folds
    from clinicmm.evidence import EncodedCohort
    from clinicmm.tracking import runs
    from clinicmm.workflow import load_knowledge

    spec = load_dataset(wf.dataset_path)
    cohort, encoded = Cohort.load(wf.work / "ingest"), EncodedCohort.load(wf.work / "encode")
    kg = load_knowledge(wf)
    rows = [r for site, fold in site_folds(spec, cohort.manifest) for r in _one_fold(wf, site, fold, cohort, encoded, kg, progress)]
    table = pd.DataFrame(rows)
    out = wf.work / "evaluate" / "sites"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "leave_one_site_out.csv", index=False)
    (out / "leave_one_site_out.md").write_text(table_markdown(table, list(table.columns)))
    metrics = {f"{r.model}.site_{r.site}.macro_f1": r.macro_f1 for r in table.itertuples()}
    metrics |= {f"{m}.mean_site_macro_f1": v for m, v in table.groupby("model")["macro_f1"].mean().items()}
    run_id = runs.log_stage(wf, "leave_one_site_out", metrics, {"site_column": spec.labels.site_column, "sites": table["site"].nunique()})
    from mlflow import MlflowClient

    client = MlflowClient(runs.read_runs(wf)["tracking_uri"])
    for name in ("leave_one_site_out.csv", "leave_one_site_out.md"):
        client.log_artifact(run_id, str(out / name), "sites")
    return table


def wanted(wf) -> bool:
    """Whether the workflow's dataset asks for leave-one-site-out (the config checks it names a site column)."""
    from clinicmm.config import load_dataset

    return load_dataset(wf.dataset_path).split.leave_one_site_out
