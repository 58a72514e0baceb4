"""The registered model behind ``mlflow models serve`` (local env, one worker), scored over HTTP on 127.0.0.1.

A small kg_gnn-only workflow registers the model in a sqlite store under tmp; the REST server loads it by alias.
Timings are printed (``pytest -s``) and never asserted.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request

import mlflow_procs as mp
import pytest

pytestmark = pytest.mark.e2e

MODEL = "serve-model"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(model server, workflow's work folder); the server's process group is stopped however the module ends."""
    root = tmp_path_factory.mktemp("model_serving")
    uri = f"sqlite:///{root / 'tracking' / 'mlflow.db'}"
    _, took = mp.demo_workflow(
        root,
        uri,
        MODEL,
        patients=40,
        seed=4,
        max_epochs=15,
        patience=5,
        models=["kg_gnn"],
        encoders={"image": {"spatial_size": [16, 32, 32]}},
    )
    TIMINGS["clinicmm run"] = took
    proc = mp.start_model_server(f"models:/{MODEL}@champion", uri, root)
    TIMINGS["models serve start (to /ping)"] = proc.started_s
    try:
        yield proc, root / "work"
    finally:
        proc.stop()
        print("\n[timings] " + ", ".join(f"{k}: {v:.1f} s" for k, v in TIMINGS.items()))


def _post(url: str, payload: dict) -> tuple[int, dict]:
    """POST JSON; returns (HTTP status, parsed body) for successes and HTTP errors alike."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=180) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")[-2000:]}


def _frame(work, n: int):
    """The model input of ``n`` test patients and the classes the served model was trained on."""
    from clinicmm.ingest.cohort import Cohort
    from clinicmm.serve.predict import cohort_frame

    cohort = Cohort.load(work / "ingest")
    classes = json.loads((work / "train" / "kg_gnn" / "model.json").read_text())["classes"]
    return cohort_frame(cohort, cohort.patients("test")[:n]), classes


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def test_invocations_return_one_prediction_per_patient_with_probabilities(served):
    proc, work = served
    frame, classes = _frame(work, 4)
    start = time.monotonic()
    status, body = _post(proc.url + "/invocations", {"dataframe_split": frame.to_dict(orient="split")})
    TIMINGS["first /invocations (4 patients)"] = time.monotonic() - start
    assert status == 200, body
    rows = body["predictions"]
    assert [r["patient_id"] for r in rows] == frame["patient_id"].tolist()
    for row in rows:
        assert row["status"] == "scored", row["reason"]
        assert row["predicted"] in classes
        probs = {k[len("prob_") :]: v for k, v in row.items() if k.startswith("prob_")}
        assert set(probs) == set(classes)
        assert abs(sum(probs.values()) - 1) < 1e-4
        assert row["predicted"] == max(probs, key=probs.get)


def test_a_malformed_row_is_reported_not_scored_and_the_others_still_score(served):
    proc, work = served
    frame, _ = _frame(work, 3)
    frame.loc[frame.index[-1], "expression"] = '{"TP53": '  # truncated JSON in one cell
    status, body = _post(proc.url + "/invocations", {"dataframe_split": frame.to_dict(orient="split")})
    assert status == 200, body  # a bad row is a result, not a server error
    rows = {r["patient_id"]: r for r in body["predictions"]}
    bad = rows[frame["patient_id"].iloc[-1]]
    assert bad["status"] == "not scored" and "expression" in bad["reason"] and "JSON" in bad["reason"]
    assert all(_missing(v) for k, v in bad.items() if k.startswith("prob_"))
    assert all(rows[p]["status"] == "scored" for p in frame["patient_id"].iloc[:-1])


def test_a_request_without_patient_id_is_refused_with_a_client_error(served):
    proc, work = served
    frame, _ = _frame(work, 1)
    status, body = _post(
        proc.url + "/invocations", {"dataframe_split": frame.drop(columns="patient_id").to_dict(orient="split")}
    )
    assert 400 <= status < 500 and "patient_id" in body["error"]
