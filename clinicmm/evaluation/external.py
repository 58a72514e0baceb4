"""External validation: a registered model scores a second, labelled dataset, reported apart from the
internal test split.

The second dataset is read like ``predict`` reads one (no split), checked against the workflow's own cohort
(an image or note found in both is a leak: ``StageError``), scored by the registered model
(``models:/NAME@ALIAS`` through MLflow, exactly as in production) and compared with its labels. Results go to
``workdir/external/<dataset name>/`` (metrics, confusion matrix, predictions) and to an MLflow run of its own,
tagged ``clinicmm.evaluation = external``, never to the internal evaluate stage's runs or files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.csvsafe import write_csv
from clinicmm.errors import ConfigError, StageError
from clinicmm.ingest.cohort import Cohort
from clinicmm.ingest.leakage import Leak, image_leaks, normal_id, note_leaks, render, split_of_patients
from clinicmm.keys import Col, Status

log = logging.getLogger("clinicmm")


def _tagged(cohort, tag: str):
    """The usable part of a cohort with patient ids prefixed by ``tag`` and every patient in split ``tag``."""

    def prefix(table):
        if table is None or table.empty:
            return None
        table = table.copy()
        table[Col.PATIENT.value] = tag + ":" + table[Col.PATIENT].astype(str)
        return table

    m = cohort.manifest[cohort.manifest[Col.STATUS] == Status.OK].copy()
    m[Col.SPLIT.value] = tag
    return Cohort(manifest=prefix(m), series=prefix(cohort.series), notes=prefix(cohort.notes))


def overlap_leaks(internal, external) -> tuple[list[Leak], list[str]]:
    """Images and notes of an external dataset that are also in the internal (training) cohort, and the
    patient ids the two share (a note only: two hospitals may number patients alike)."""
    parts = [_tagged(internal, "internal"), _tagged(external, "external")]
    tables = {n: [getattr(c, n) for c in parts if getattr(c, n) is not None] for n in ("manifest", "series", "notes")}
    both = Cohort(**{n: pd.concat(t, ignore_index=True) if t else None for n, t in tables.items()})
    split_of = split_of_patients(both)
    ids = [
        {normal_id(str(p)) for p in c.manifest.loc[c.manifest[Col.STATUS] == Status.OK, Col.PATIENT]}
        for c in (internal, external)
    ]
    shared = ids[0] & ids[1]
    notes = (
        [
            f"{len(shared)} patient id(s) of the external dataset also occur in the internal one (ids only; images "
            "and notes were checked and differ)"
        ]
        if shared
        else []
    )
    return image_leaks(both, split_of) + note_leaks(both, split_of), notes


def _check_overlap(wf, cohort) -> list[str]:
    if not (wf.work / "ingest" / "cohort.parquet").is_file():
        return ["internal cohort not ingested: overlap with the training data not checked"]
    leaks, notes = overlap_leaks(Cohort.load(wf.work / "ingest"), cohort)
    if leaks:
        raise StageError(render(leaks, "external dataset", "it and the workflow's own dataset"))
    return notes


def _score(model_uri: str, cohort, patients: list[str], spec) -> pd.DataFrame:
    from clinicmm.serve.predict import load_registered, score_cohort

    return score_cohort(load_registered(model_uri), cohort, patients, spec)


def external_metrics(preds: pd.DataFrame, labels: dict[str, str]) -> tuple[dict[str, float], np.ndarray, list[str]]:
    """Metrics of the scored rows whose label the model knows; counts of the rest and, with omics, the median share
    of the model's omics features the patients measured and how many measured under half (another panel: the
    rest imputed); (metrics, confusion, classes)."""
    from clinicmm.serve.scoring import LOW_PANEL_SHARE
    from clinicmm.training.calibration import expected_calibration_error
    from clinicmm.training.metrics import classification_metrics, confusion

    classes = [c[len("prob_") :] for c in preds.columns if c.startswith("prob_")]
    scored = preds[preds["status"] == "scored"]
    truth = scored["patient_id"].map(labels)
    known = truth.isin(classes)
    y = np.array([classes.index(t) for t in truth[known]])
    probs = np.array(scored.loc[known, [f"prob_{c}" for c in classes]].to_numpy(dtype=float))  # writable, for torch
    counts = {
        "n_patients": float(len(preds)),
        "n_scored": float(len(scored)),
        "n_evaluated": float(len(y)),
        "n_label_unknown_to_model": float((~known).sum()),
    }
    if "omics_measured" in scored:  # how much of the model's omics panel the dataset measured (see scoring)
        share = pd.to_numeric(scored["omics_measured"], errors="coerce").dropna()
        if len(share):
            counts["omics_measured_median"] = float(share.median())
            counts["n_omics_measured_under_half"] = float((share < LOW_PANEL_SHARE).sum())
    if len(y) == 0:
        raise StageError(
            "external dataset: no scored patient has a label the model knows "
            f"(model classes: {', '.join(classes)}); check labels.label_column and the label codes."
        )
    metrics = classification_metrics(y, probs, classes) | {"ece": expected_calibration_error(probs, y)}
    return counts | metrics, confusion(y, probs.argmax(1), len(classes)), classes


def evaluate_external(wf, dataset_path: Path, model_uri: str | None = None) -> dict:
    """Score a labelled second dataset with a registered model; write and log the results apart."""
    from clinicmm.config import load_dataset
    from clinicmm.ingest.cohort import build_cohort
    from clinicmm.tracking.plots import confusion_png

    spec = load_dataset(dataset_path)
    if spec.labels is None:
        raise ConfigError(
            f"{dataset_path}: external validation needs labels; add a 'labels' section (or use `clinicmm predict`)."
        )
    model_uri = model_uri or f"models:/{wf.tracking.registered_model}@{wf.tracking.alias}"
    cohort = build_cohort(spec, split=False)
    notes = _check_overlap(wf, cohort)
    m = cohort.manifest
    usable = m[(m[Col.STATUS] == Status.OK) & (m[Col.LABEL] != "")]
    if usable.empty:
        raise StageError(f"{dataset_path}: no usable labelled patient; see `clinicmm ingest {dataset_path}` for why.")
    preds = _score(model_uri, cohort, usable[Col.PATIENT].tolist(), spec)
    metrics, cm, classes = external_metrics(preds, dict(zip(usable[Col.PATIENT], usable[Col.LABEL])))
    out = wf.work / "external" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    write_csv(preds, out / "predictions.csv", index=False)  # local file, like predict's; never logged to MLflow
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    title = f"external {spec.name}: {model_uri} (n={int(metrics['n_evaluated'])})"
    png = confusion_png(cm, classes, title, out / "confusion.png")
    result = {"dataset": spec.name, "model_uri": model_uri, "folder": str(out), "metrics": metrics, "notes": notes}
    result["run_id"] = _log(wf, spec.name, model_uri, metrics, [png, out / "metrics.json"], cohort)
    return result


def _log(wf, name: str, model_uri: str, metrics: dict[str, float], files: list[Path], cohort) -> str:
    """A run of its own in the workflow's experiment, tagged external (counts, metrics, plots; no ids)."""
    import mlflow

    from clinicmm import __version__
    from clinicmm.tracking.runs import dataset_digest
    from clinicmm.tracking.setup import configure, experiment_id

    exp = experiment_id(wf.tracking.experiment, configure(wf.tracking))
    tags = {
        "clinicmm.evaluation": "external",
        "clinicmm.stage": "external",
        "clinicmm.version": __version__,
        "clinicmm.model_uri": model_uri,
        "clinicmm.external_dataset": name,
        "clinicmm.dataset_digest": dataset_digest(cohort),
    }
    with mlflow.start_run(experiment_id=exp, run_name=f"external: {name}", tags=tags) as run:
        mlflow.log_metrics({f"external_{k}": v for k, v in metrics.items() if v == v})
        for f in files:
            mlflow.log_artifact(str(f), "external")
    return run.info.run_id
