"""Predict: a registered model scores every patient of a dataset (CSV, and DICOM SR on request).

The dataset is read and linked like ingest does (no split); each usable patient becomes one row of the
registered model's input frame (see :mod:`clinicmm.serve.scoring`), built from the ingest indexes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from clinicmm.config import load_dataset
from clinicmm.csvsafe import write_csv
from clinicmm.errors import StageError
from clinicmm.ingest.cohort import Cohort
from clinicmm.keys import Col

log = logging.getLogger("clinicmm")


def load_registered(model_uri: str):
    """``mlflow.pyfunc.load_model``; any failure (MLflow raises several types for a bad URI) as one ModelError."""
    import mlflow.pyfunc

    from clinicmm.errors import ModelError

    try:
        return mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(
            f"cannot load model {model_uri!r}: {str(exc).splitlines()[0].rstrip('.')}. Check the name, version or alias."
        ) from exc


def cohort_frame(cohort: Cohort, patients: list[str]) -> pd.DataFrame:
    """The registered model's input frame for these patients, from the ingest indexes (raw values)."""
    from clinicmm.ingest.cohort import patient_inputs

    raw = patient_inputs(cohort, patients)
    expr = cohort.expression
    muts = cohort.mutations
    if muts is not None:
        muts = muts[(muts[Col.STATUS] == "ok") & muts["non_silent"].astype(bool)]
    rows = []
    for i, pid in enumerate(patients):
        rec = {
            "patient_id": pid,
            "dicom_files": "",
            "body_part": raw["body_parts"][i],
            "notes": "",
            "expression": "",
            "mutations": "",
        }
        if raw["series"][i]:
            rec["dicom_files"] = json.dumps(raw["series"][i])
        if raw["texts"][i]:
            rec["notes"] = json.dumps(raw["texts"][i])
        if expr is not None and pid in expr.index:
            rec["expression"] = json.dumps({g: float(v) for g, v in expr.loc[pid].items() if pd.notna(v)})
        if muts is not None and (genes := sorted(set(muts.loc[muts[Col.PATIENT] == pid, "gene"]))):
            rec["mutations"] = json.dumps(genes)
        rows.append(rec)
    return pd.DataFrame(rows)


def _model_identity(model_uri: str) -> tuple[str, str]:
    """(name, version) of a ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` URI; (uri, '') otherwise."""
    if not model_uri.startswith("models:/"):
        return model_uri, ""
    from mlflow import MlflowClient

    ref = model_uri[len("models:/") :]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(MlflowClient().get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    return name, version


def write_dicom_sr(result: pd.DataFrame, cohort: Cohort, model_uri: str, folder: Path) -> pd.DataFrame:
    """One DICOM Comprehensive SR per scored patient with an image series, in the patient's source study."""
    from clinicmm.serve.dicom_sr import write_sr_for_predictions

    if cohort.series is None:
        raise StageError(
            "--dicom-sr needs imaging: the dataset names no 'imaging' root, so there is no study to report into."
        )
    name, version = _model_identity(model_uri)
    written = write_sr_for_predictions(result, cohort.series, folder, name, version)
    log.info(
        "dicom-sr: %d written, %d skipped (see sr_index.csv)",
        int((written["status"] == "ok").sum()),
        int((written["status"] != "ok").sum()),
    )
    write_csv(written, folder / "sr_index.csv", index=False)
    return written


def score_cohort(model, cohort: Cohort, patients: list[str], spec, explain: bool = True) -> pd.DataFrame:
    """``model.predict`` of these patients, the dataset's own folders (``spec``: its DatasetSpec) allowed to the
    registered model for this call: a served model reads only ``serving.data_roots``, but ``clinicmm predict``
    scores files the user's own dataset YAML names (with ``follow_symlinks_outside``, where its links lead too).
    ``explain``: with the explanation columns (opt-in per request for a served model; ``clinicmm predict`` writes
    them next to its predictions)."""
    from clinicmm.ingest.cohort import dataset_roots
    from clinicmm.serve.scoring import allow_roots

    frame = cohort_frame(cohort, patients)
    roots = dataset_roots(spec)
    if spec.follow_symlinks_outside:
        files = [f for cell in frame["dicom_files"] if cell for f in json.loads(cell)]
        roots += sorted({Path(os.path.realpath(f)).parent for f in files})
    with allow_roots(roots):
        return model.predict(frame, params={"explain": bool(explain)})


def predict(
    model_uri: str, dataset_path: Path, out: Path, overwrite: bool = False, dicom_sr: Path | None = None
) -> pd.DataFrame:
    """Score every patient of a dataset with a registered model; unscorable patients are listed with why.

    With ``dicom_sr``, also writes one DICOM Comprehensive SR per scored patient into that folder.
    """
    from clinicmm.errors import InputError
    from clinicmm.ingest.cohort import build_cohort

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; choose another --out or pass --overwrite to replace it.")
    spec = load_dataset(dataset_path)
    cohort = build_cohort(spec, split=False)
    manifest = cohort.manifest
    usable = manifest.loc[manifest[Col.STATUS] == "ok", Col.PATIENT.value].tolist()
    model = load_registered(model_uri)
    result = score_cohort(model, cohort, usable, spec) if usable else pd.DataFrame()
    skipped = manifest[manifest[Col.STATUS] != "ok"]
    extra = pd.DataFrame(
        {"patient_id": skipped[Col.PATIENT.value], "status": "not scored", "reason": skipped[Col.REASON.value]}
    )
    result = pd.concat([result, extra], ignore_index=True)
    from clinicmm.serve.explain import write_explanations  # per-patient JSON next to the predictions file

    result = write_explanations(result, out)
    write_csv(result, out, index=False)  # atomic; no cell can start a spreadsheet formula
    if dicom_sr is not None:
        Path(dicom_sr).mkdir(parents=True, exist_ok=True)
        write_dicom_sr(result, cohort, model_uri, Path(dicom_sr))
    return result


# ------------------------------------------------------------------------------------------------ all
