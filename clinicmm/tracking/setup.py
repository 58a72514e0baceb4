"""MLflow set-up: an explicit tracking URI and experiments whose artifacts live beside the sqlite store.

Default store: ``sqlite:///mlruns/mlflow.db`` (relative to the working directory) with artifacts under
``mlruns/<experiment>/``. ``MLFLOW_TRACKING_URI`` or ``tracking.uri`` in the workflow YAML override it; an
``http(s)://`` URI of an ``mlflow server`` works the same way (artifacts then go where the server says).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from clinicmm.config import TrackingSpec


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths resolved against the working directory)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).resolve()


def configure(spec: TrackingSpec) -> str:
    """Point MLflow at the spec's tracking URI (creating the sqlite folder if needed); returns the URI."""
    import mlflow

    uri = spec.tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(name: str, uri: str) -> str:
    """The id of experiment ``name``, created on first use with its artifacts beside a sqlite store."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    db = sqlite_path(uri)
    location = (db.parent / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)).as_uri() if db is not None else None
    return mlflow.create_experiment(name, artifact_location=location)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {'training.lr': '0.003', ...}, values as short strings (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out
