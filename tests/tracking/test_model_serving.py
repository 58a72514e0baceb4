"""The registered model behind ``mlflow models serve`` (local env, one worker), scored over HTTP on 127.0.0.1.

A small kg_gnn-only workflow registers the model in a sqlite store under tmp, with ``serving.data_roots`` naming
the demo's data folder; the REST server loads it by alias. Timings are printed (``pytest -s``) and never asserted.
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
        serving={"data_roots": ["data"]},  # the demo's folder: request paths are read there and nowhere else
    )
    TIMINGS["clinicmm run"] = took
    proc = mp.start_model_server(f"models:/{MODEL}@champion", uri, root)
    TIMINGS["models serve start (to /ping)"] = proc.started_s
    try:
        yield proc, root / "work"
    finally:
        proc.stop()
        print("\n[timings] " + ", ".join(f"{k}: {v:.1f} s" for k, v in TIMINGS.items()))


def _strict(constant: str):
    raise ValueError(f"non-standard JSON constant {constant} (JavaScript's JSON.parse rejects it)")


def _post(url: str, payload: dict) -> tuple[int, dict]:
    """POST JSON; returns (HTTP status, parsed body) for successes and HTTP errors alike. A success must be strict
    JSON (no NaN / Infinity)."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=180) as r:
            return r.status, json.loads(r.read(), parse_constant=_strict)
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
    assert "stack_trace" not in body["error"] and "Traceback" not in body["error"]


def test_paths_outside_the_data_roots_are_not_read_and_cost_only_their_row(served):
    """The probes of issue 16: each row not scored with the same reason, nothing of the file echoed, the valid
    rows of the same request scored (a missing file in a DICOM list included)."""
    from clinicmm.serve.scoring import INPUT_COLUMNS, REFUSED

    proc, work = served
    frame, _ = _frame(work, 2)
    files = json.loads(frame["dicom_files"].iloc[0])
    probes = {
        "notes_file": "/etc/passwd",
        "dicom_files": "/etc/ssl",
        "expression_file": "/etc/passwd",
    }
    empty = dict.fromkeys(INPUT_COLUMNS, "")
    rows = [empty | r for r in frame.to_dict(orient="records")]
    for i, (column, value) in enumerate(probes.items()):
        rows.append(empty | {"patient_id": f"probe-{i}", column: value})
    rows.append(empty | {"patient_id": "probe-missing", "dicom_files": json.dumps([*files[:-1], files[-1] + ".gone"])})
    status, body = _post(proc.url + "/invocations", {"dataframe_records": rows})
    assert status == 200, body
    got = {r["patient_id"]: r for r in body["predictions"]}
    for pid in frame["patient_id"]:
        assert got[pid]["status"] == "scored", got[pid]["reason"]
    for i, column in enumerate(probes):
        assert got[f"probe-{i}"]["status"] == "not scored"
        assert got[f"probe-{i}"]["reason"] == f"column {column!r}: {REFUSED}"
    assert got["probe-missing"]["reason"] == f"column 'dicom_files': {REFUSED}"
    text = json.dumps(body)
    assert "root:" not in text and "/etc" not in text and "certs" not in text


def test_the_registered_model_declares_its_outputs_and_stores_the_data_roots(served):
    """register() logs the output schema (every prob_<class> column) and serving.data_roots as model_config."""
    import yaml

    _, work = served
    root = work.parent
    found = [yaml.safe_load(p.read_text()) for p in root.rglob("MLmodel")]
    assert found, "no MLmodel file under the tracking store"
    model = found[-1]
    outputs = {c["name"]: c["type"] for c in json.loads(model["signature"]["outputs"])}
    classes = json.loads((work / "train" / "kg_gnn" / "model.json").read_text())["classes"]
    assert {outputs[f"prob_{c}"] for c in classes} == {"double"} and outputs["set_size"] == "long"
    assert model["flavors"]["python_function"]["config"] == {"data_roots": [str((root / "data").resolve())]}
