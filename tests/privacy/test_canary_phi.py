"""PHI never reaches MLflow: canaries planted in a demo cohort, the whole workflow run, every stored byte scanned.

One small concat-only workflow (24 patients) is shared by the module. A patient's DICOM headers get a canary
name, MRN and birth date, and one of their notes gets the same plus a distinctive phrase; the MLflow store (the
sqlite database and every artifact) and the captured log lines and CLI output are then scanned for the canaries,
every real patient id and the pseudonym key. Positive controls prove the canaries really flowed into the
pipeline and that the scanner finds one planted in a param.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import stat

import pandas as pd
import pydicom
import pytest
import yaml

pytestmark = pytest.mark.e2e

MODEL = "canary-model"
VICTIM = "DEMO-0003"
NAME_DICOM, NAME_NOTE = "Quixote-Hargreaves^Zebulon", "Zebulon Quixote-Hargreaves"
CANARIES = {
    "family name": "Quixote-Hargreaves",
    "given name": "Zebulon",
    "MRN": "80417733",
    "birth date (DICOM)": "19530719",
    "birth date (note)": "07/19/1953",
    "note phrase": "the heron circled the lighthouse twice",
}


def _plant(data) -> None:
    for path in (data / "dicom").rglob("*"):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # the README and other non-DICOM files of the demo tree
            continue
        if ds.get("PatientID") == VICTIM:
            ds.PatientName, ds.PatientBirthDate, ds.OtherPatientIDs = (
                NAME_DICOM,
                CANARIES["birth date (DICOM)"],
                CANARIES["MRN"],
            )
            ds.save_as(path)
    notes = pd.read_csv(data / "notes.csv", dtype=str, keep_default_na=False)
    first = notes.index[notes["patient_id"] == VICTIM][0]
    notes.loc[first, "text"] = (
        f"Patient {NAME_NOTE} (MRN {CANARIES['MRN']}, DOB {CANARIES['birth date (note)']}) says "
        f"{CANARIES['note phrase']}. " + notes.loc[first, "text"]
    )
    notes.to_csv(data / "notes.csv", index=False)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory, one_thread):
    from typer.testing import CliRunner

    from clinicmm.cli import app
    from clinicmm.demo.generator import generate_demo

    root = tmp_path_factory.mktemp("canary")
    generate_demo(root / "data", patients=24, seed=11, missing_rate=0.0, slices=8, size=32)
    _plant(root / "data")
    wf = {
        "name": "canary",
        "dataset": "data/dataset.yaml",
        "workdir": "work",
        "models": ["concat"],
        "primary_model": "concat",
        "encoders": {"image": {"spatial_size": [8, 32, 32]}},
        "training": {"max_epochs": 2, "patience": 1},
        "tracking": {
            "uri": f"sqlite:///{root / 'tracking' / 'mlflow.db'}",
            "experiment": "canary",
            "registered_model": MODEL,
        },
    }
    (root / "wf.yaml").write_text(yaml.safe_dump(wf))
    records, logger = _Records(), logging.getLogger()
    old_level, old_cwd, env = logger.level, os.getcwd(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    saved_key = os.environ.pop("CLINICMM_PHI_KEY", None)
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    os.chdir(root)
    try:
        result = CliRunner().invoke(app, ["run", str(root / "wf.yaml"), "--no-progress"])
    finally:
        os.chdir(old_cwd)
        logger.removeHandler(records)
        logger.setLevel(old_level)
        for name, value in (("MLFLOW_TRACKING_URI", env), ("CLINICMM_PHI_KEY", saved_key)):
            if value is not None:
                os.environ[name] = value
    assert result.exit_code == 0, (result.output[-3000:], result.exception)
    return root, [result.output, *records.lines]


def _needles(root) -> dict[str, str]:
    ids = pd.read_csv(root / "data" / "labels.csv", dtype=str)["patient_id"].tolist()
    key = (root / "work" / "privacy.key").read_text().strip()
    return CANARIES | {f"patient id {p}": p for p in ids} | {"pseudonym key": key}


def test_no_canary_patient_id_or_key_reaches_mlflow_or_the_logs(canary_run):
    from clinicmm.privacy.scan import scan_tree

    root, texts = canary_run
    needles = _needles(root)
    report = scan_tree([root / "tracking"], needles.values(), texts)
    print(
        f"\n[canary scan] {report['files']} files ({report['bytes']} bytes) under the MLflow store and "
        f"{len(texts)} log lines / outputs, {len(needles)} needles: {len(report['hits'])} hits"
    )
    assert report["files"] > 20 and any(n.endswith("mlflow.db") for n in map(str, (root / "tracking").rglob("*")))
    assert report["hits"] == []


def test_the_canaries_really_flowed_into_the_pipeline(canary_run):
    from clinicmm.privacy.scan import scan_tree

    root, _ = canary_run
    found = {h["needle"] for h in scan_tree([root / "data"], CANARIES.values())["hits"]}
    assert found == set(CANARIES.values())
    kept = {
        h["needle"]
        for h in scan_tree([root / "work" / "ingest", root / "work" / "predict"], [CANARIES["note phrase"], VICTIM])[
            "hits"
        ]
    }
    assert kept == {CANARIES["note phrase"], VICTIM}  # the workdir (inside the hospital) keeps them


def test_the_scanner_finds_a_canary_planted_in_a_param_or_a_log_line(canary_run, tmp_path):
    from mlflow import MlflowClient

    from clinicmm.privacy.scan import scan_tree

    root, texts = canary_run
    shutil.copytree(root / "tracking", tmp_path / "tracking")
    client = MlflowClient(f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("canary").experiment_id
    run = client.create_run(exp)
    client.log_param(run.info.run_id, "leak", CANARIES["MRN"])
    hits = scan_tree([tmp_path / "tracking"], [CANARIES["MRN"]])["hits"]
    assert hits and all(h["needle"] == CANARIES["MRN"] for h in hits)
    assert scan_tree([], [VICTIM], [*texts, f"scoring {VICTIM}"])["hits"] == [
        {"needle": VICTIM, "where": f"text #{len(texts)}"}
    ]


def test_predictions_reach_mlflow_only_under_keyed_pseudonyms(canary_run):
    import mlflow
    from mlflow import MlflowClient

    from clinicmm.privacy.pseudonym import pseudonym

    root, _ = canary_run
    runs = json.loads((root / "work" / "runs.json").read_text())
    client = MlflowClient(runs["tracking_uri"])
    mlflow.set_tracking_uri(runs["tracking_uri"])
    logged = pd.read_csv(
        client.download_artifacts(runs["stages"]["predict"], "predictions_pseudonymised.csv", str(root))
    )
    local = pd.read_csv(root / "work" / "predict" / "predictions.csv")
    key = (root / "work" / "privacy.key").read_text().strip().encode()
    assert logged["patient_id"].tolist() == [pseudonym(p, key) for p in local["patient_id"]]
    assert "reason" not in logged.columns and (logged["predicted"].fillna("") == local["predicted"].fillna("")).all()
    assert stat.S_IMODE((root / "work" / "privacy.key").stat().st_mode) == 0o600


def test_the_registered_model_holds_no_pickle_and_its_weights_are_safetensors(canary_run, tmp_path):
    import mlflow

    from clinicmm.privacy.scan import find_pickles

    root, _ = canary_run
    mlflow.set_tracking_uri(f"sqlite:///{root / 'tracking' / 'mlflow.db'}")
    folder = mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion", dst_path=str(tmp_path / "model"))
    files = [p.name for p in (tmp_path / "model").rglob("*") if p.is_file()]
    assert "weights.safetensors" in files and "MLmodel" in files
    assert find_pickles(tmp_path / "model") == [], files
    (tmp_path / "model" / "artifacts" / "sneaky.bin").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model" / "artifacts" / "sneaky.bin").write_bytes(pickle.dumps({"a": 1}))
    assert [p.name for p in find_pickles(folder)] == ["sneaky.bin"]
