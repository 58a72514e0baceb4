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


def fold_data(data, fold: pd.DataFrame):
    """``data`` (a :class:`~clinicmm.workflow.TrainingData`) as one fold sees it: that fold's split, the classes
    of its train split, and the omics refitted on it. ``data`` itself is unchanged, apart from cancer-type nodes
    its graph gains for the fold's classes."""
    out = copy.copy(data)
    out.cohort = copy.copy(data.cohort)
    out.cohort.manifest = fold
    out.split = dict(zip(fold[Col.PATIENT], fold[Col.SPLIT]))
    out.encoded = _refit_omics(data.wf, out.cohort, data.encoded, data.kg)
    out.classes = out.train_classes()
    data.kg.ensure_nodes(Node.CANCER, out.classes)
    return out


def _unseen(data) -> int:
    """Test patients whose label the fold's train split lacks (left out of the scores)."""
    return sum(1 for p in data.encoded.patients if data.split.get(p) == Split.TEST and data.label.get(p) not in data.classes)


def _one_fold(site: str, data, progress: bool) -> list[dict]:
    import torch

    from clinicmm.fusion.registry import build_model
    from clinicmm.training.data import Standardizer, class_nodes, dims_of
    from clinicmm.training.fit import fit, predict_proba
    from clinicmm.training.metrics import classification_metrics

    (tr, _), (va, _), (te, _) = (data.rows(s) for s in (Split.TRAIN, Split.VAL, Split.TEST))
    scaler = Standardizer.fit(data.encoded.vectors, np.array(tr))
    (train, _), (val, _), (test, yte) = (data.items(s, scaler) for s in (Split.TRAIN, Split.VAL, Split.TEST))
    dims, hetero, t, n = dims_of(data.encoded.vectors), data.kg.to_hetero(), data.wf.training, len(data.classes)
    unknown, out = _unseen(data), []
    for name in data.wf.models:
        torch.manual_seed(t.seed)
        model = build_model(name, dims, n, hetero, class_nodes(data.kg, data.classes), t.hidden, t.dropout)
        model, _ = fit(model, train, val, hetero, dims, t, n, None, progress)
        metrics = classification_metrics(yte, predict_proba(model, test, hetero, dims), data.classes) if te else {}
        out.append({"site": site, "model": name, "n_train": len(tr), "n_val": len(va), "n_test": len(te), "n_test_label_unseen": unknown,
                    **{k: metrics.get(k, float("nan")) for k in ("accuracy", "macro_f1", "auroc_ovr")}})
        log.info("leave-one-site-out %s, %s: macro-F1 %.3f on %d patients", site, name, out[-1]["macro_f1"], len(te))
    return out


def leave_one_site_out(wf, progress: bool = False, data=None) -> pd.DataFrame:
    """Train every model once per held-out site; one row per (site, model), written and logged. ``data``: the
    evaluate stage's :class:`~clinicmm.workflow.TrainingData` (loaded when not given)."""
    from clinicmm.config import load_dataset
    from clinicmm.evaluation.robustness import table_markdown
    from clinicmm.evaluation.sites import site_folds
    from clinicmm.tracking import runs
    from clinicmm.workflow import TrainingData

    spec = load_dataset(wf.dataset_path)
    data = data if data is not None else TrainingData(wf)
    rows = [r for site, fold in site_folds(spec, data.cohort.manifest) for r in _one_fold(site, fold_data(data, fold), progress)]
    table = pd.DataFrame(rows)
    out = wf.work / "evaluate" / "sites"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "leave_one_site_out.csv", index=False)
    (out / "leave_one_site_out.md").write_text(table_markdown(table, list(table.columns)))
    metrics = {f"{r.model}.site_{r.site}.macro_f1": r.macro_f1 for r in table.itertuples()}
    metrics |= {f"{m}.mean_site_macro_f1": v for m, v in table.groupby("model")["macro_f1"].mean().items()}
    runs.log_stage(wf, "leave_one_site_out", metrics, {"site_column": spec.labels.site_column, "sites": table["site"].nunique()},
                   files={"sites": [out / "leave_one_site_out.csv", out / "leave_one_site_out.md"]})
    return table


def wanted(wf) -> bool:
    """Whether the workflow's dataset asks for leave-one-site-out (the config checks it names a site column)."""
    from clinicmm.config import load_dataset

    return load_dataset(wf.dataset_path).split.leave_one_site_out
