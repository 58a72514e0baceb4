"""MLflow set-up (sqlite URI, experiments beside the store, flat params) and the de-identified run inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clinicmm.config import DEFAULT_TRACKING_URI, TrackingSpec
from clinicmm.ingest.cohort import Cohort
from clinicmm.tracking.runs import dataset_digest, ingest_summary
from clinicmm.tracking.setup import configure, experiment_id, flatten, sqlite_path


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Path:
    """Work in tmp_path; MLflow's global URIs and their environment variables are restored afterwards."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, "unset-by-test")  # recorded, so teardown restores the original state
        monkeypatch.delenv(var)
    return tmp_path


# ------------------------------------------------------------------------------------------------ setup


def test_sqlite_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///mlruns/mlflow.db") == tmp_path.resolve() / "mlruns" / "mlflow.db"
    assert sqlite_path(f"sqlite:///{tmp_path}/a/b.db") == tmp_path.resolve() / "a" / "b.db"
    assert sqlite_path("http://localhost:5000") is None
    assert sqlite_path("file:///tmp/mlruns") is None


def test_flatten():
    nested = {"name": "wf", "training": {"lr": 0.003, "dims": [1, 2]}, "a": {"b": {"c": None}}, "long": "x" * 600}
    assert flatten(nested) == {
        "name": "wf",
        "training.lr": "0.003",
        "training.dims": "[1, 2]",
        "a.b.c": "None",
        "long": "x" * 500,
    }
    assert flatten({}) == {}


def test_configure_creates_the_folder_and_makes_the_uri_absolute(isolated):
    import mlflow

    uri = configure(TrackingSpec(uri="sqlite:///store/deep/mlflow.db"))
    db = isolated.resolve() / "store" / "deep" / "mlflow.db"
    assert uri == f"sqlite:///{db}"
    assert db.parent.is_dir()
    assert mlflow.get_tracking_uri() == uri and mlflow.get_registry_uri() == uri


def test_configure_default_uri_is_under_the_working_directory(isolated):
    assert TrackingSpec().tracking_uri() == DEFAULT_TRACKING_URI
    uri = configure(TrackingSpec())
    assert uri == f"sqlite:///{isolated.resolve() / 'mlruns' / 'mlflow.db'}"
    assert (isolated / "mlruns").is_dir()


def test_configure_leaves_a_server_uri_alone(isolated):
    import mlflow

    assert configure(TrackingSpec(uri="http://127.0.0.1:5999")) == "http://127.0.0.1:5999"
    assert mlflow.get_tracking_uri() == "http://127.0.0.1:5999"
    assert list(isolated.iterdir()) == []


def test_experiment_artifacts_beside_the_sqlite_store_and_idempotent(isolated):
    import mlflow

    uri = configure(TrackingSpec(uri="sqlite:///store/mlflow.db"))
    first = experiment_id("clinicmm", uri)
    assert experiment_id("clinicmm", uri) == first
    store = isolated.resolve() / "store"
    assert mlflow.get_experiment(first).artifact_location == (store / "clinicmm").as_uri()
    other = experiment_id("my exp/2", uri)  # characters unsafe in a folder name become '_'
    assert other != first
    assert mlflow.get_experiment(other).artifact_location == (store / "my_exp_2").as_uri()
    assert mlflow.get_experiment(other).name == "my exp/2"
    assert not (isolated / "mlruns").exists()


# ------------------------------------------------------------------------------------------ run inputs

IDS = ["TCGA-AB-1234", "PAT-0007", "PAT-0042"]
PATHS = ["/data/site-a/dicom/TCGA-AB-1234/series1", "/data/site-a/notes.csv", "C:\\exports\\labels.csv"]


def report() -> dict:
    """An ingest report shaped like clinicmm.ingest.cohort.make_report's, with ids and paths in its skipped rows."""
    return {
        "dataset": "demo",
        "patients": {"seen": 12, "usable": 10, "labelled": 9},
        "modalities": {
            "image": {"present": 8, "missing": 2},
            "note": {"present": 9, "missing": 1},
            "omics": {"present": 7, "missing": 3},
        },
        "splits": {"train": 6, "val": 1, "test": 2},
        "labels": {"LUAD": {"train": 3, "val": 1, "test": 1}, "BRCA": {"train": 3, "val": 0, "test": 1}},
        "skipped": [
            {
                "modality": "image",
                "source": PATHS[0],
                "row": None,
                "patient_id": IDS[0],
                "reason": f"series of {IDS[0]} has 2 slices; need at least 4",
            },
            {"modality": "note", "source": PATHS[1], "row": 7, "patient_id": IDS[1], "reason": "empty text"},
            {
                "modality": "labels",
                "source": PATHS[2],
                "row": 3,
                "patient_id": IDS[2],
                "reason": "patient listed again with another label ('LUAD' first); kept the first",
            },
            {
                "modality": "image",
                "source": PATHS[0] + "/x.dcm",
                "row": None,
                "patient_id": "",
                "reason": f"{PATHS[0]}/x.dcm: not a DICOM file",
            },
        ],
        "issues": [f"sample {IDS[0]}-01A has no expression values", "3 genes with zero variance"],
    }


def test_ingest_summary_keeps_counts_only():
    summary = ingest_summary(report())
    original = report()
    for key in ("dataset", "patients", "modalities", "splits", "labels"):
        assert summary[key] == original[key]
    assert summary["skipped_by_modality"] == {"image": 2, "note": 1, "labels": 1}
    assert summary["issues"] == 2
    text = json.dumps(summary)
    for secret in IDS + PATHS + ["x.dcm", "site-a", "TCGA", "PAT-"]:
        assert secret not in text, secret


def test_ingest_summary_of_an_empty_report():
    summary = ingest_summary({"dataset": "d"})
    assert summary["dataset"] == "d" and summary["skipped_by_modality"] == {} and summary["issues"] == 0


def manifest(labels=("LUAD", "BRCA", "LUAD"), splits=("train", "val", "test")) -> Cohort:
    return Cohort(
        manifest=pd.DataFrame({"patient_id": IDS, "label": list(labels), "split": list(splits), "status": "ok"})
    )


def test_dataset_digest_follows_labels_and_splits():
    base = dataset_digest(manifest())
    assert len(base) == 64 and all(c in "0123456789abcdef" for c in base)
    assert dataset_digest(manifest()) == base
    assert dataset_digest(manifest(labels=("LUAD", "BRCA", "BRCA"))) != base
    assert dataset_digest(manifest(splits=("train", "train", "test"))) != base
    renamed = manifest()
    renamed.manifest.loc[0, "patient_id"] = "PAT-9999"
    assert dataset_digest(renamed) != base
    assert not any(pid in base for pid in IDS)


def test_dataset_digest_ignores_row_order():
    shuffled = manifest()
    shuffled.manifest = shuffled.manifest.iloc[[2, 0, 1]].reset_index(drop=True)
    assert dataset_digest(shuffled) == dataset_digest(manifest())
