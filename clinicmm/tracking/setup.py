"""MLflow set-up: an explicit tracking URI and experiments whose artifacts live beside the sqlite store.

Default store: ``sqlite:///mlruns/mlflow.db`` (relative to the working directory) with artifacts under
``mlruns/<experiment>/``. ``MLFLOW_TRACKING_URI`` or ``tracking.uri`` in the workflow YAML override it; an
``http(s)://`` URI of an ``mlflow server`` works the same way (artifacts then go where the server says).
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import time
from typing import Any

from clinicmm.config import TrackingSpec
from clinicmm.errors import ConfigError
from clinicmm.pseudo import sqlite_path  # noqa: F401 -- where the tracking code and its callers find it

STORE_LOCK_TIMEOUT_S = 600.0  # a hang guard only: the lock is held while a store is created or migrated
_ready: set[str] = set()  # store URIs this process has created or checked under the store lock


@contextlib.contextmanager
def store_lock(uri: str, timeout_s: float = STORE_LOCK_TIMEOUT_S):
    """An exclusive ``flock`` on ``<db>.lock`` beside a sqlite store (a no-op for other stores) for the block.

    MLflow creates and migrates a sqlite store on first use, and that is not safe when two processes do it at
    once (``table ... already exists``); nor is get-or-create of an experiment. Both happen under this lock.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    path = db.with_name(db.name + ".lock")
    with open(path, "a+b") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"{path}: another process has held the MLflow store's lock for over {timeout_s:.0f} s. "
                        "Check for a hung clinicmm or mlflow process using this store and stop it."
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _create_store(uri: str) -> None:
    """Create (or check and migrate) the tracking and registry stores of ``uri`` once per process, under the lock."""
    if uri in _ready or sqlite_path(uri) is None:
        return
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with store_lock(uri):
        tracking_utils._get_store(uri)  # MLflow caches the store per URI: later uses neither create nor migrate
        registry_utils._get_store(uri)
    _ready.add(uri)


def configure(spec: TrackingSpec) -> str:
    """Point MLflow at the spec's tracking URI (creating the sqlite folder and store if needed); returns the URI."""
    import mlflow

    uri = spec.tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _create_store(uri)
    return uri


def experiment_id(name: str, uri: str) -> str:
    """The id of experiment ``name``, created on first use with its artifacts beside a sqlite store (under the
    store's lock, so that two processes starting at once share one experiment)."""
    import mlflow

    _create_store(uri)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    with store_lock(uri):
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
