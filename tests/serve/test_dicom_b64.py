"""DICOM sent in the request (``dicom_b64``): base64 Part-10 files of one series, scored like the same files by path.

Every request goes through the registered model's ``predict`` (the pyfunc as MLflow loads it). The decoded files live
in a private folder of the request (mode 700) that is gone when ``predict`` returns, also when scoring fails; a bad
entry makes only its row ``not scored``, with a reason naming the column and the entry index and nothing of the
entry's content or of the serving machine's folders.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import Served
from dicom_fixtures import body, write_series

from clinicmm.serve import scoring
from clinicmm.serve.scoring import B64_COLUMN, B64_UNREADABLE, INPUT_COLUMNS, allow_roots

SECRET = "SECRET-CONTENT-7f3a"  # inside a bad entry: must never come back


def b64(*blobs: bytes) -> str:
    return json.dumps([base64.b64encode(b).decode() for b in blobs])


def files_b64(paths) -> str:
    return b64(*(Path(p).read_bytes() for p in paths))


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c, "") for c in INPUT_COLUMNS} for r in rows])


@pytest.fixture
def folders(monkeypatch) -> list[tuple[str, int]]:
    """Every folder the scoring module makes with ``tempfile.mkdtemp``, with its mode when made."""
    made: list[tuple[str, int]] = []
    real = scoring.tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        path = real(*args, **kwargs)
        made.append((path, stat.S_IMODE(os.stat(path).st_mode)))
        return path

    monkeypatch.setattr(scoring.tempfile, "mkdtemp", mkdtemp)
    return made


@pytest.fixture(scope="module")
def outside_series(tmp_path_factory) -> list[Path]:
    """A CT series outside the model's data roots (readable by path only under ``allow_roots``)."""
    folder = tmp_path_factory.mktemp("b64_series")
    return write_series(folder / "s", body("chest", (6, 16, 16)), patient="B64", body_part="CHEST")


def _scored(out: pd.DataFrame, pid: str) -> pd.Series:
    row = out.set_index("patient_id").loc[pid]
    assert row["status"] == "scored", row["reason"]
    return row


def test_a_base64_series_scores_the_same_as_its_files_by_path(served: Served, outside_series, folders):
    by_path = frame({"patient_id": "p", "dicom_files": json.dumps([str(f) for f in outside_series])})
    sent = frame({"patient_id": "p", B64_COLUMN: files_b64(outside_series)})
    with allow_roots([outside_series[0].parent]):
        path_out = served.model.predict(by_path, params={"explain": True})
    b64_out = served.model.predict(sent, params={"explain": True})

    a, b = _scored(path_out, "p"), _scored(b64_out, "p")
    assert a["modalities"] == b["modalities"] == "image"
    probs = [c for c in path_out.columns if c.startswith("prob_")]
    np.testing.assert_allclose(b[probs].astype(float), a[probs].astype(float), rtol=0, atol=1e-6)
    assert b["predicted"] == a["predicted"]
    assert json.loads(b["explanation"]) == json.loads(a["explanation"])
    # one private folder, mode 700, gone once predict returned
    assert len(folders) == 1
    path, mode = folders[0]
    assert mode == 0o700
    assert not os.path.exists(path)


def test_without_allow_roots_the_same_files_by_path_are_refused(served: Served, outside_series):
    out = served.model.predict(frame({"patient_id": "p", "dicom_files": json.dumps([str(outside_series[0])])}))
    assert out["status"].iloc[0] == "not scored"  # the b64 folder's trust does not extend to paths


def test_bad_entries_make_their_row_not_scored_naming_column_and_index_only(served: Served, folders):
    good = files_b64(served.layout.series)
    entries = json.loads(good)
    not_dicom = entries[:1] + [base64.b64encode(f"{SECRET} plain text, no preamble".encode() * 10).decode()]
    short = [base64.b64encode(SECRET.encode()).decode()]
    not_base64 = entries[:2] + [f"{SECRET}!!not*base64"]
    rows = [
        {"patient_id": "ok", B64_COLUMN: good},
        {"patient_id": "not-dicom", B64_COLUMN: json.dumps(not_dicom)},
        {"patient_id": "short", B64_COLUMN: json.dumps(short)},
        {"patient_id": "not-base64", B64_COLUMN: json.dumps(not_base64)},
        {"patient_id": "not-a-list", B64_COLUMN: json.dumps({"x": SECRET})},
        {"patient_id": "not-json", B64_COLUMN: SECRET},
        {"patient_id": "both", B64_COLUMN: good, "dicom_files": json.dumps([str(served.layout.series[0])])},
    ]
    out = served.model.predict(frame(*rows)).set_index("patient_id")

    assert out.loc["ok", "status"] == "scored"
    bad = out.drop(index="ok")
    assert (bad["status"] == "not scored").all()
    assert out.loc["not-dicom", "reason"].startswith(f"column {B64_COLUMN!r}: entry 1 is not a DICOM Part-10 file")
    assert out.loc["short", "reason"].startswith(f"column {B64_COLUMN!r}: entry 0 is not a DICOM Part-10 file")
    assert out.loc["not-base64", "reason"] == f"column {B64_COLUMN!r}: entry 2 is not valid base64"
    assert B64_COLUMN in out.loc["not-a-list", "reason"] and B64_COLUMN in out.loc["not-json", "reason"]
    assert "not both" in out.loc["both", "reason"]
    text = out.to_json()
    assert SECRET not in text
    assert not any(path in text for path, _ in folders)
    assert folders and not any(os.path.exists(path) for path, _ in folders)


def test_limits_per_file_per_row_and_per_request(served: Served, monkeypatch, folders):
    series = served.layout.series
    sizes = [Path(p).stat().st_size for p in series]
    size = max(sizes)
    monkeypatch.setattr(scoring, "MAX_B64_FILE_BYTES", size - 1)  # the largest file(s) over the limit
    out = served.model.predict(frame({"patient_id": "big", B64_COLUMN: files_b64(series)}))
    assert out["status"].iloc[0] == "not scored"
    first = sizes.index(size)  # the first entry over the limit is named (file sizes differ by a few header bytes)
    assert out["reason"].iloc[0].startswith(f"column {B64_COLUMN!r}: entry {first} is larger than")

    monkeypatch.setattr(scoring, "MAX_B64_FILE_BYTES", size)
    monkeypatch.setattr(scoring, "MAX_B64_FILES", len(series) - 1)
    out = served.model.predict(frame({"patient_id": "many", B64_COLUMN: files_b64(series)}))
    assert out["status"].iloc[0] == "not scored" and f"at most {len(series) - 1} per row" in out["reason"].iloc[0]

    monkeypatch.setattr(scoring, "MAX_B64_FILES", len(series))
    total = sum(Path(p).stat().st_size for p in series)
    monkeypatch.setattr(scoring, "MAX_B64_REQUEST_BYTES", total + total // 2)  # one row fits, not two
    rows = [
        {"patient_id": "first", B64_COLUMN: files_b64(series)},
        {"patient_id": "second", B64_COLUMN: files_b64(series)},
    ]
    out = served.model.predict(frame(*rows)).set_index("patient_id")
    assert out.loc["first", "status"] == "scored"
    assert out.loc["second", "status"] == "not scored"
    assert "request's limit" in out.loc["second", "reason"]
    assert not any(os.path.exists(path) for path, _ in folders)


def test_a_dicom_file_that_cannot_be_read_as_an_image_gets_a_generic_reason(served: Served, folders):
    broken = b"\0" * 128 + b"DICM" + SECRET.encode() * 20  # the preamble, then no valid data set
    out = served.model.predict(frame({"patient_id": "broken", B64_COLUMN: b64(broken)}))
    assert out["status"].iloc[0] == "not scored"
    assert out["reason"].iloc[0] == f"image: {B64_UNREADABLE}"
    assert SECRET not in out.to_json()
    assert not any(os.path.exists(path) for path, _ in folders)


def test_the_private_folder_is_removed_when_scoring_fails(served: Served, monkeypatch, folders):
    def boom(*args, **kwargs):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(scoring, "_score_parsed", boom)
    out = served.model.predict(frame({"patient_id": "p", B64_COLUMN: files_b64(served.layout.series)}))
    assert out["status"].iloc[0] == "not scored"
    assert len(folders) == 1 and not os.path.exists(folders[0][0])


def test_the_signature_takes_dicom_b64_and_an_explain_param(served: Served):
    signature = served.model.metadata.get_input_schema()
    assert B64_COLUMN in signature.input_names()
    params = {p.name: p for p in served.model.metadata.get_params_schema().params}
    assert params["explain"].dtype.name == "boolean" and params["explain"].default is False  # opt-in
