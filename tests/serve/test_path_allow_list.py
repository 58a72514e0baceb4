"""A served model reads a request's paths only inside its data roots (serving.data_roots / $CLINICMM_DATA_ROOTS).

Every probe goes through the registered model's ``predict`` (the pyfunc as MLflow loads it) in one request with
valid rows beside it: the probe's row is ``not scored`` with the one generic reason, nothing of the outside
(path, file name, canary content, line count) appears in the output, the valid rows are scored, and nothing outside
the roots was opened or listed (an audit hook watches; a FIFO outside would hang the request if it were opened).
"""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import CANARY, Served

from clinicmm.serve.scoring import DATA_ROOTS_ENV, INPUT_COLUMNS, REFUSED

DEADLINE_S = 600  # a request blocked opening a FIFO never returns: fail instead of hanging the suite


def refused(column: str) -> str:
    return f"column {column!r}: {REFUSED}"


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{c: r.get(c, "") for c in INPUT_COLUMNS} for r in rows])


def valid_rows(served: Served) -> list[dict]:
    """Rows that must score in every request: an inline note, DICOM files and a note file inside the root."""
    root = served.layout.root
    return [
        {"patient_id": "ok-inline", "notes": "FINAL DIAGNOSIS: invasive ductal carcinoma."},
        {"patient_id": "ok-dicom", "dicom_files": json.dumps([str(f) for f in served.layout.series])},
        {"patient_id": "ok-note-file", "notes_file": str(root / "note.txt")},
    ]


def predict(served: Served, rows: list[dict], opened_outside) -> pd.DataFrame:
    """The model's predict on ``rows``, in a thread with a deadline, with the audit hook watching."""
    result: dict = {}

    def run() -> None:
        try:
            result["out"] = served.model.predict(frame(*rows))
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            result["error"] = exc

    opened_outside.outside = os.path.realpath(served.layout.outside)
    opened_outside.seen.clear()
    opened_outside.watching = True
    try:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(DEADLINE_S)
    finally:
        opened_outside.watching = False
    if worker.is_alive():
        pytest.fail("predict did not return: it is blocked opening a FIFO")
    if "error" in result:
        raise result["error"]
    return result["out"]


def assert_nothing_leaked(served: Served, out: pd.DataFrame) -> None:
    text = json.dumps(out.to_dict(orient="records"), default=str)
    outside = served.layout.outside
    for fragment in (
        CANARY,
        str(outside),
        "outside",
        "canary",
        "fifo",
        "linkdir",
        "/etc",
        "does not exist",
        "data rows",
    ):
        assert fragment not in text, f"{fragment!r} in the output"


def check(served: Served, opened_outside, probes: list[tuple[str, str]]) -> pd.DataFrame:
    """Send ``(column, value)`` probes (one row each) with the valid rows; assert what every probe must meet."""
    rows = valid_rows(served) + [{"patient_id": f"probe-{i}", col: value} for i, (col, value) in enumerate(probes)]
    out = predict(served, rows, opened_outside).set_index("patient_id")
    for row in valid_rows(served):
        assert out.loc[row["patient_id"], "status"] == "scored", out.loc[row["patient_id"], "reason"]
    for i, (col, value) in enumerate(probes):
        got = out.loc[f"probe-{i}"]
        assert got["status"] == "not scored", (col, value)
        assert got["reason"] == refused(col), (col, value, got["reason"])
        assert all(got[c] is None for c in out.columns if c.startswith("prob_"))
    assert_nothing_leaked(served, out.reset_index())
    assert not opened_outside.seen, f"opened or listed outside the roots: {opened_outside.seen}"
    return out


def test_absolute_paths_outside_the_roots_are_refused_unread(served, opened_outside):
    o = served.layout.outside
    check(
        served,
        opened_outside,
        [
            ("notes_file", str(o / "canary.txt")),
            ("notes_file", str(o / "notes")),
            ("expression_file", str(o / "canary.tsv")),
            ("expression_file", "/etc/passwd"),
            ("dicom_files", json.dumps([str(f) for f in served.layout.outside_series])),
            ("dicom_files", str(o / "series")),
            ("dicom_files", "/etc/ssl"),
        ],
    )


def test_dot_dot_traversal_is_refused_even_when_it_stays_inside(served, opened_outside):
    root = served.layout.root
    check(
        served,
        opened_outside,
        [
            ("notes_file", f"{root}/../outside/canary.txt"),
            ("expression_file", f"{root}/../outside/canary.tsv"),
            ("dicom_files", f"{root}/../outside/series"),
            ("dicom_files", json.dumps([f"{root}/../outside/series/{f.name}" for f in served.layout.outside_series])),
            ("notes_file", f"{root}/notes/../note.txt"),  # inside, but '..' is never needed: refused too
        ],
    )


def test_symbolic_links_inside_a_root_that_lead_out_are_refused(served, opened_outside):
    root = served.layout.root
    check(
        served,
        opened_outside,
        [
            ("notes_file", str(root / "link.txt")),
            ("notes_file", str(root / "linknotes")),
            ("expression_file", str(root / "link.txt")),
            ("dicom_files", str(root / "linkdir")),
            ("dicom_files", json.dumps([str(root / "series_link.dcm")])),
        ],
    )


def test_url_encoded_paths_and_urls_are_refused(served, opened_outside):
    root = served.layout.root
    check(
        served,
        opened_outside,
        [
            ("notes_file", f"{root}/%2e%2e%2foutside%2fcanary.txt"),
            ("notes_file", f"{root}%2Fnote.txt"),  # an encoded path inside the root: still refused
            ("notes_file", f"file://{served.layout.outside}/canary.txt"),
            ("notes_file", f"file://{root}/note.txt"),  # a URL is refused even when it points inside
            ("expression_file", f"file://{served.layout.outside}/canary.tsv"),
            ("dicom_files", json.dumps([f"file://{f}" for f in served.layout.series])),
            ("dicom_files", "http://example.org/series"),
        ],
    )


def test_folders_where_files_are_expected_special_files_nul_bytes_and_missing_files(served, opened_outside):
    root, o = served.layout.root, served.layout.outside
    check(
        served,
        opened_outside,
        [
            ("expression_file", str(root / "notes")),  # a folder where a file is expected
            ("dicom_files", json.dumps([str(root / "series")])),  # a folder inside a file list
            ("notes_file", str(root / "fifo.txt")),  # a FIFO inside the root: opening it would block forever
            ("notes_file", str(o / "fifo")),
            ("notes_file", str(root / "fifolink.txt")),
            ("expression_file", str(root / "fifo.txt")),
            ("dicom_files", json.dumps([str(root / "fifo.txt")])),
            ("notes_file", f"{root}/note.txt\x00.png"),
            ("dicom_files", json.dumps([str(served.layout.series[0]) + "\x00"])),
            ("notes_file", str(root / "missing.txt")),
            ("expression_file", str(root / "missing.tsv")),
            ("notes_file", "note.txt"),  # relative: to the server's working folder, which no client knows
        ],
    )
    for fifo in (root / "fifo.txt", o / "fifo"):  # no reader is (still) blocked on either FIFO
        with pytest.raises(OSError) as err:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert err.value.errno == errno.ENXIO


def test_one_missing_file_in_a_dicom_list_fails_only_its_row(served, opened_outside):
    files = [str(f) for f in served.layout.series]
    out = check(served, opened_outside, [("dicom_files", json.dumps([*files[:-1], files[-1] + ".gone"]))])
    assert out.loc["ok-dicom", "modalities"] == "image"


def test_without_data_roots_every_path_is_refused_and_inline_rows_still_score(served, opened_outside, monkeypatch):
    monkeypatch.setenv(DATA_ROOTS_ENV, "")  # set and empty: replaces serving.data_roots with nothing
    root = served.layout.root
    rows = [
        {"patient_id": "inline", "notes": "FINAL DIAGNOSIS: invasive ductal carcinoma."},
        {"patient_id": "dicom", "dicom_files": json.dumps([str(f) for f in served.layout.series])},
        {"patient_id": "folder", "dicom_files": str(root / "series")},
        {"patient_id": "note", "notes_file": str(root / "note.txt")},
        {"patient_id": "both", "notes": "a note", "notes_file": str(root / "note.txt")},
    ]
    out = predict(served, rows, opened_outside).set_index("patient_id")
    assert out.loc["inline", "status"] == "scored"
    for pid, col in (
        ("dicom", "dicom_files"),
        ("folder", "dicom_files"),
        ("note", "notes_file"),
        ("both", "notes_file"),
    ):
        assert (out.loc[pid, "status"], out.loc[pid, "reason"]) == ("not scored", refused(col))


def test_the_environment_variable_replaces_the_registered_roots(served, opened_outside, monkeypatch, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "n.txt").write_text("FINAL DIAGNOSIS: adenocarcinoma.")
    monkeypatch.setenv(DATA_ROOTS_ENV, os.pathsep.join([str(other), str(tmp_path / "not-there")]))
    rows = [
        {"patient_id": "new-root", "notes_file": str(other / "n.txt")},
        {"patient_id": "registered-root", "notes_file": str(served.layout.root / "note.txt")},
    ]
    out = predict(served, rows, opened_outside).set_index("patient_id")
    assert out.loc["new-root", "status"] == "scored", out.loc["new-root", "reason"]
    assert out.loc["registered-root", "reason"] == refused("notes_file")


def test_a_relative_root_in_the_environment_fails_with_the_variable_named(served, monkeypatch):
    from clinicmm.errors import ModelError

    monkeypatch.setenv(DATA_ROOTS_ENV, "data")
    with pytest.raises(ModelError, match=f"{DATA_ROOTS_ENV}.*absolute") as err:
        served.model.predict(frame({"patient_id": "a", "notes": "x"}))
    assert "Traceback" not in str(err.value)


def test_the_registered_roots_are_the_workflows_serving_data_roots(tmp_path):
    """register() stores serving.data_roots (relative ones from the workflow file's folder) as model_config."""
    from clinicmm.config import WorkflowSpec
    from clinicmm.serve.register import serving_config

    wf = WorkflowSpec(
        name="w", dataset=Path("d.yaml"), workdir=Path("work"), base_dir=tmp_path,
        serving={"data_roots": ["incoming", "/srv/dicom"]},
    )  # fmt: skip
    assert serving_config(wf) == {"data_roots": [str(tmp_path / "incoming"), "/srv/dicom"]}
    assert WorkflowSpec(name="w", dataset=Path("d"), workdir=Path("w")).serving.data_roots == []  # off: refuse


@pytest.mark.parametrize("bad", ["/", "file:///srv/data", ""])
def test_a_data_root_that_would_allow_everything_is_a_config_error(bad):
    from pydantic import ValidationError

    from clinicmm.config import ServingSpec

    with pytest.raises(ValidationError, match="serving.data_roots"):
        ServingSpec(data_roots=[bad])


def test_the_served_model_carries_the_registered_roots(served):
    assert served.model.unwrap_python_model().data_roots == [str(served.layout.root)]


def test_allow_roots_extends_the_roots_for_in_process_callers_only_inside_its_block(served, tmp_path):
    """``clinicmm predict`` scores its own dataset's files through the registered model within ``allow_roots``."""
    from clinicmm.serve.scoring import allow_roots

    other = tmp_path / "dataset"
    other.mkdir()
    (other / "n.txt").write_text("FINAL DIAGNOSIS: adenocarcinoma.")
    rows = frame({"patient_id": "a", "notes_file": str(other / "n.txt")})
    with allow_roots([other]):
        inside = served.model.predict(rows)
    after = served.model.predict(rows)
    assert inside["status"].tolist() == ["scored"], inside["reason"].tolist()
    assert after["reason"].tolist() == [refused("notes_file")]
