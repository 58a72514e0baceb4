"""clinicmm against a real ``mlflow server`` on 127.0.0.1: runs, metrics, registry aliases and model files go over HTTP.

One server (sqlite store, artifacts proxied into a tmp folder) and one ``clinicmm run`` are shared by the module.
Timings are printed (``pytest -s``) and never asserted.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow_procs as mp
import pandas as pd
import pytest

pytestmark = pytest.mark.e2e

MODEL = "srv-model"
MODELS = {"image", "note", "omics", "concat", "kg_gnn", "kg_pathway", "logreg", "gbt"}  # the default models
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running tracking server; stopped (its whole process group) however the module ends."""
    root = tmp_path_factory.mktemp("mlflow_server")
    proc = mp.start_tracking_server(root)
    TIMINGS["server start (to /health)"] = proc.started_s
    try:
        yield proc, root
    finally:
        proc.stop()
        print("\n[timings] " + ", ".join(f"{k}: {v:.1f} s" for k, v in TIMINGS.items()))


@pytest.fixture(scope="module")
def workflow(server):
    """A small demo run through ``clinicmm run`` with ``tracking.uri`` set to the server; returns (url, root, run)."""
    proc, root = server
    work = root / "client"
    work.mkdir()
    try:
        run, took = mp.demo_workflow(
            work,
            proc.url,
            MODEL,
            patients=60,
            seed=4,
            max_epochs=25,
            patience=6,
            encoders={"image": {"spatial_size": [16, 32, 32]}},
            primary_model="kg_gnn",  # named, not the champion: these tests read the graph model's bundle and runs
        )  # small volumes: 2 cores
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n--- server log tail ---\n{proc.tail()}") from None
    TIMINGS["clinicmm run"] = took
    return proc.url, root, run


@pytest.fixture
def at_server(workflow, monkeypatch):
    """MLflow's global tracking/registry URI pointed at the server for one test, restored afterwards."""
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    url = workflow[0]
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(var, url)
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    return url


def _client(url: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def _model_runs(client, experiment_id: str) -> tuple[object, dict[str, object]]:
    """(the workflow's parent run, {model name: its child run})."""
    runs = client.search_runs([experiment_id], max_results=200)
    parents = [r for r in runs if r.data.tags.get("clinicmm.stage") == "workflow"]
    assert len(parents) == 1, [r.data.tags.get("clinicmm.stage") for r in runs]
    children = {
        r.data.tags["clinicmm.model"]: r
        for r in runs
        if "clinicmm.model" in r.data.tags and r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    }
    return parents[0], children


def test_the_workflow_logs_a_parent_and_one_child_run_per_model_to_the_server(workflow):
    url, _, run = workflow
    assert f"models:/{MODEL}@champion" in run.stdout
    client = _client(url)
    experiment = client.get_experiment_by_name("srv")
    assert experiment is not None and experiment.lifecycle_stage == "active"
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server's proxied store, not a path
    parent, children = _model_runs(client, experiment.experiment_id)
    assert set(children) == MODELS
    assert parent.data.params["tracking.uri"] == url
    assert all(f"test_macro_f1.{m}" in parent.data.metrics for m in MODELS)
    kg = children["kg_gnn"].data
    for key in ("test_macro_f1", "test_accuracy", "best_val_loss"):
        assert key in kg.metrics, sorted(kg.metrics)
    assert 0.0 <= kg.metrics["test_macro_f1"] <= 1.0
    assert kg.metrics["test_macro_f1"] == pytest.approx(parent.data.metrics["test_macro_f1.kg_gnn"], abs=1e-6)
    history = client.get_metric_history(children["kg_gnn"].info.run_id, "val_macro_f1")
    assert len(history) >= 2 and len({m.step for m in history}) == len(history)  # one point per epoch


def test_artifacts_are_listed_over_http_and_land_in_the_server_folder_only(workflow):
    url, root, _ = workflow
    client = _client(url)
    _, children = _model_runs(client, client.get_experiment_by_name("srv").experiment_id)
    plots = {Path(a.path).name for a in client.list_artifacts(children["kg_gnn"].info.run_id, "plots")}
    assert "curves.png" in plots
    stored = root / "artifacts"
    bundle = {p.name for p in stored.rglob("*") if p.is_file() and "kg_gnn" in p.parts}
    assert {"model.json", "weights.safetensors"} <= bundle, sorted(bundle)
    assert any(stored.rglob("MLmodel"))
    client_dir = root / "client"
    assert not (client_dir / "mlruns").exists()  # nothing written to the working directory's default store
    assert not (client_dir / "mlflow.db").exists() and not (client_dir / "mlartifacts").exists()


def test_champion_alias_is_set_and_promote_moves_another_alias_over_http(workflow):
    url, root, _ = workflow
    client = _client(url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1" and champion.tags["clinicmm.model"] == "kg_gnn"
    _, children = _model_runs(client, client.get_experiment_by_name("srv").experiment_id)
    assert champion.run_id == children["kg_gnn"].info.run_id
    result = mp.cli("promote", MODEL, "1", "--alias", "challenger", "--tracking-uri", url, cwd=root / "client")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"models:/{MODEL}@challenger" in result.stdout
    assert client.get_model_version_by_alias(MODEL, "challenger").version == "1"
    assert set(client.get_registered_model(MODEL).aliases) == {"champion", "challenger"}
    missing = mp.cli("promote", MODEL, "7", "--alias", "challenger", "--tracking-uri", url, cwd=root / "client")
    assert missing.returncode == 1 and "has no version '7'" in missing.stderr and "Traceback" not in missing.stderr


def test_the_champion_loads_from_the_server_and_scores_like_the_cli(workflow, at_server):
    import mlflow.pyfunc

    from clinicmm.ingest.cohort import Cohort
    from clinicmm.serve.predict import cohort_frame

    _, root, _ = workflow
    work = root / "client" / "work"
    cohort = Cohort.load(work / "ingest")
    patients = cohort.patients("test")[:4]
    start = time.monotonic()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    from clinicmm.serve.scoring import allow_roots

    with allow_roots([root]):  # the workflow sets no serving.data_roots: a served model would refuse every path
        got = model.predict(cohort_frame(cohort, patients)).set_index("patient_id")
    TIMINGS["load_model + predict 4 patients"] = time.monotonic() - start
    cli = pd.read_csv(work / "predict" / "predictions.csv", keep_default_na=False).set_index("patient_id")
    probs = [c for c in got.columns if c.startswith("prob_")]
    assert set(got.index) == set(patients)
    for pid in patients:
        assert got.loc[pid, "status"] == "scored", got.loc[pid, "reason"]
        assert got.loc[pid, "predicted"] == cli.loc[pid, "predicted"]
        assert abs(got.loc[pid, probs].astype(float).sum() - 1) < 1e-4
