"""What a served request returns: strict JSON with stable types, row-level failures only, never a stack trace.

Requests go through MLflow's own scoring function (``mlflow.pyfunc.scoring_server.invocations``, what
``mlflow models serve`` runs for ``POST /invocations``) in process, so the JSON is the server's byte for byte.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import CLASSES
from mlflow.exceptions import MlflowException

from clinicmm.serve.scoring import FAILED, INPUT_COLUMNS, REFUSED, json_safe, output_columns


def strict(text: str):
    """``json.loads`` that refuses NaN / Infinity, as JavaScript's JSON.parse does."""

    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def post(served, rows: list[dict], params: dict | None = None):
    """``POST /invocations`` with ``dataframe_split`` (and ``params``); (status, body text) or the MlflowException it
    raised."""
    from mlflow.pyfunc.scoring_server import invocations

    frame = pd.DataFrame([{c: r.get(c, "") for c in INPUT_COLUMNS if c in r or "patient_id" in r} for r in rows])
    payload = json.dumps({"dataframe_split": frame.to_dict(orient="split")} | ({"params": params} if params else {}))
    result = invocations(payload, "application/json", served.model, served.model.metadata.get_input_schema())
    return result.status, result.response


def rows_with_a_missing_dicom_file(served) -> list[dict]:
    files = [str(f) for f in served.layout.series]
    return [
        {"patient_id": "A", "notes": "FINAL DIAGNOSIS: invasive adenocarcinoma of the lung."},
        {"patient_id": "B", "dicom_files": json.dumps([*files[:-1], files[-1] + ".gone"])},
        {"patient_id": "C", "dicom_files": json.dumps(files)},
    ]


def test_a_request_with_a_failing_row_answers_strict_json_with_stable_types(served):
    status, body = post(served, rows_with_a_missing_dicom_file(served), {"explain": True})
    assert status == 200
    assert "NaN" not in body and "Infinity" not in body
    rows = {r["patient_id"]: r for r in strict(body)["predictions"]}
    assert rows["B"]["status"] == "not scored" and rows["B"]["reason"] == f"column 'dicom_files': {REFUSED}"
    assert all(rows["B"][f"prob_{c}"] is None for c in CLASSES) and rows["B"]["set_size"] is None
    for pid in ("A", "C"):
        row = rows[pid]
        assert row["status"] == "scored", row["reason"]
        assert type(row["set_size"]) is int and row["set_size"] == len(row["prediction_set"].split("+"))
        assert all(type(row[f"prob_{c}"]) is float for c in CLASSES)
        assert abs(sum(row[f"prob_{c}"] for c in CLASSES) - 1) < 1e-4
        assert type(row["top1_prob"]) is float and isinstance(row["decision"], str) and row["decision"]
        strict(row["explanation"])  # the explanation JSON inside is strict too
    assert rows["B"]["share_image"] is None and rows["B"]["top1_prob"] is None  # null, where pandas had NaN


def test_predict_output_dumps_with_allow_nan_false(served):
    out = served.model.predict(
        pd.DataFrame([{c: r.get(c, "") for c in INPUT_COLUMNS} for r in rows_with_a_missing_dicom_file(served)])
    )
    json.dumps(out.to_dict(orient="records"), allow_nan=False)  # raises ValueError on NaN / inf
    scored = out[out["status"] == "scored"]
    assert [type(v) for v in scored["set_size"]] == [int] * len(scored)


def test_a_row_that_breaks_encoding_is_not_scored_and_the_others_are(served, monkeypatch):
    """Any error inside the batch (here the featurizer raising for one patient, with a path in its message) costs
    that row only: the rows are retried one by one and the error text never reaches the client."""
    featurizer = served.model.unwrap_python_model().featurizer
    real = featurizer.encode

    def encode(patients, *args, **kwargs):
        if "boom" in patients:
            raise RuntimeError("cannot read /secret/server/path/patient-boom.dcm")
        return real(patients, *args, **kwargs)

    monkeypatch.setattr(featurizer, "encode", encode)
    rows = [
        {"patient_id": "ok-1", "notes": "FINAL DIAGNOSIS: ductal carcinoma."},
        {"patient_id": "boom", "notes": "FINAL DIAGNOSIS: adenocarcinoma."},
        {"patient_id": "ok-2", "notes": "FINAL DIAGNOSIS: squamous cell carcinoma."},
    ]
    status, body = post(served, rows)
    assert status == 200 and "/secret" not in body and "RuntimeError" not in body
    got = {r["patient_id"]: r for r in strict(body)["predictions"]}
    assert [got[p]["status"] for p in ("ok-1", "boom", "ok-2")] == ["scored", "not scored", "scored"]
    assert got["boom"]["reason"] == FAILED


def test_request_level_errors_carry_a_message_and_no_stack_trace(served, monkeypatch):
    with pytest.raises(MlflowException) as err:
        post(served, [{"notes": "no patient id column"}])
    sent = json.loads(err.value.serialize_as_json())
    assert "stack_trace" not in sent and "patient_id" in sent["message"]
    assert 400 <= err.value.get_http_status_code() < 500

    bundle = served.model.unwrap_python_model().bundle
    monkeypatch.setitem(bundle.fingerprints, "note", "0" * 64)  # the note encoder here differs from the trained one
    with pytest.raises(MlflowException) as err:
        post(served, [{"patient_id": "A", "notes": "FINAL DIAGNOSIS: carcinoma."}])
    sent = json.loads(err.value.serialize_as_json())
    assert "stack_trace" not in sent and "retrain" in sent["message"] and "Traceback" not in sent["message"]


def test_the_signature_declares_the_output_columns_and_their_types(served):
    outputs = served.model.metadata.get_output_schema()
    assert outputs is not None
    kinds = {c.name: c.type.name for c in outputs.inputs}
    out = served.model.predict(pd.DataFrame([{"patient_id": "A", "notes": "FINAL DIAGNOSIS: carcinoma."}]))
    assert list(kinds) == list(out.columns)  # every column, in the order the model returns them
    assert {kinds[f"prob_{c}"] for c in CLASSES} == {"double"} and kinds["set_size"] == "long"
    assert kinds["status"] == kinds["decision"] == kinds["explanation"] == "string"
    assert [c.name for c in outputs.inputs if c.required] == ["patient_id", "status"]


def test_json_safe_replaces_nan_and_infinity_and_fixes_the_types():
    names = [n for n, _ in output_columns(["X", "Y"])]
    row = dict.fromkeys(names, "")
    frame = pd.DataFrame(
        [
            row | {"patient_id": "a", "prob_X": np.float32(0.25), "prob_Y": 0.75, "set_size": 2.0, "top1_prob": 0.75},
            row
            | {"patient_id": "b", "prob_X": np.nan, "prob_Y": math.inf, "set_size": np.nan, "share_note": -math.inf},
            row | {"patient_id": "c", "set_size": np.int64(1), "explanation": '{"share": NaN, "g": [1.5, Infinity]}'},
        ]
    )
    out = json_safe(frame)
    records = out.to_dict(orient="records")
    json.dumps(records, allow_nan=False)
    assert [r["set_size"] for r in records] == [2, None, 1] and type(records[0]["set_size"]) is int
    assert type(records[0]["prob_X"]) is float and records[1]["prob_X"] is None and records[1]["prob_Y"] is None
    assert records[1]["share_note"] is None and strict(records[2]["explanation"]) == {"share": None, "g": [1.5, None]}
    assert list(out.columns) == names


def test_explanations_are_opt_in_per_request(served):
    """Default: no explanation work (explanation columns empty, null shares); ``"params": {"explain": true}`` adds it.
    The signature declares the param with its default, so ``mlflow models`` clients see it."""
    rows = [{"patient_id": "A", "notes": "FINAL DIAGNOSIS: invasive adenocarcinoma of the lung."}]
    plain = strict(post(served, rows)[1])["predictions"][0]
    full = strict(post(served, rows, {"explain": True})[1])["predictions"][0]
    assert plain["status"] == full["status"] == "scored"
    assert plain["explanation"] == "" and plain["share_note"] is None
    assert strict(full["explanation"]) and type(full["share_note"]) is float
    assert plain["predicted"] == full["predicted"]
    params = {p.name: p for p in served.model.metadata.get_params_schema().params}
    assert params["explain"].default is False and params["explain"].dtype.name == "boolean"
