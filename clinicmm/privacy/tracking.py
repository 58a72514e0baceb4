"""Per-patient tables on their way to MLflow: pseudonymised ids and an allow-list of columns.

A prediction table in the hospital's workdir keeps real ids; the copy logged to MLflow has ``patient_id``
replaced by the keyed pseudonym and keeps only numbers and class-valued columns, so a free-text column added
later (a reason naming a file, a note excerpt) is left out rather than leaked.
"""

from __future__ import annotations

import pandas as pd

from clinicmm.csvsafe import csv_text
from clinicmm.privacy.pseudonym import pseudonym

CLASS_COLUMNS = (
    "predicted",
    "prediction_set",
    "decision",
    "modalities",
    "status",
    "top1",
    "top2",
    "top3",
    "label",
    "split",
)


def safe_table(frame: pd.DataFrame, key: bytes, column: str = "patient_id") -> pd.DataFrame:
    """``frame`` with ``column`` pseudonymised and only numeric or :data:`CLASS_COLUMNS` columns kept."""
    keep = [c for c in frame.columns if c in CLASS_COLUMNS or pd.api.types.is_numeric_dtype(frame[c])]
    out = frame[keep].copy()
    if column in frame.columns:
        out.insert(0, column, [pseudonym(p, key) for p in frame[column].astype(str)])
    return out


def log_safe_table(wf, run_id: str, frame: pd.DataFrame, name: str) -> str:
    """Log :func:`safe_table` of ``frame`` as CSV artifact ``name`` of ``run_id``; returns the artifact name."""
    from mlflow import MlflowClient

    from clinicmm.privacy.pseudonym import workflow_key

    table = safe_table(frame, workflow_key(wf))
    MlflowClient().log_text(run_id, csv_text(table, index=False), name)
    return name
