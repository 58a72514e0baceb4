"""End to end through the real console script: demo data → run → registry → pyfunc → rerun from cache.

One workflow run is shared by the tests of this module (it takes about a minute and a half on 2 cores).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml

pytestmark = pytest.mark.e2e

CLI = str(Path(sys.executable).with_name("clinicmm"))
MODEL = "e2e-model"
HANG_GUARD_S = 3600


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # a hang guard only, never a speed limit: a busy shared machine may take many times the quiet minutes
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    assert _cli("demo-data", "data", "--patients", "100", "--seed", "3", "--inject-bad", cwd=root).returncode == 0
    wf = {
        "name": "e2e",
        "dataset": "data/dataset.yaml",
        "workdir": "work",
        "knowledge": ["data/demo_edges.tsv"],  # the demo's own gene edges, as in workflows/demo.yaml
        "training": {"max_epochs": 40, "patience": 8},
        "tracking": {"uri": f"sqlite:///{root}/tracking/mlflow.db", "experiment": "e2e", "registered_model": MODEL},
    }
    (root / "wf.yaml").write_text(yaml.safe_dump(wf))
    run = _cli("run", "wf.yaml", "--no-progress", cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    return root, run


def run_models(root: Path) -> list[str]:
    return list(json.loads((root / "work" / "runs.json").read_text())["models"])


def test_run_prints_the_table_the_registered_model_and_the_ui_command(workflow):
    root, run = workflow
    for name in ("image", "note", "omics", "concat", "kg_gnn"):
        assert name in run.stdout
    assert f"models:/{MODEL}@champion" in run.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in run.stdout
    assert (root / "work" / "predict" / "predictions.csv").is_file()
    assert not (root / "mlruns").exists()  # everything went to the configured store, nothing to the cwd
    assert not (root / "mlflow.db").exists()


def test_fused_model_beats_every_single_modality_on_the_test_split(workflow):
    root, _ = workflow
    results = pd.read_csv(root / "work" / "evaluate" / "results.csv").set_index("model")["macro_f1"]
    best_single = max(results[m] for m in ("image", "note", "omics"))
    assert results["kg_gnn"] > best_single, results.to_dict()
    assert results["concat"] > best_single, results.to_dict()


def test_champion_loads_through_mlflow_pyfunc_and_matches_the_cli_predictions(workflow):
    import mlflow
    from mlflow import MlflowClient

    from clinicmm.ingest.cohort import Cohort
    from clinicmm.serve.predict import cohort_frame

    root, _ = workflow
    uri = f"sqlite:///{root}/tracking/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # earlier tests in this process may have pointed the registry elsewhere
    version = MlflowClient(uri, registry_uri=uri).get_model_version_by_alias(MODEL, "champion")
    champion = json.loads((root / "work" / "register" / "stage.json").read_text())["summary"]["model"]
    assert version.tags["clinicmm.model"] == champion and float(version.tags["test_macro_f1"]) > 0.5
    assert champion in run_models(root) and champion in version.description  # which model, and why
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    cohort = Cohort.load(root / "work" / "ingest")
    patients = cohort.patients("test")[:6]
    frame = cohort_frame(cohort, patients)
    frame.loc[frame.index[-1], "expression"] = '{"TP53": '  # a bad row is reported, not fatal
    from clinicmm.serve.scoring import allow_roots

    with allow_roots([root]):  # in-process, as clinicmm predict does: the workflow sets no serving.data_roots
        got = model.predict(frame).set_index("patient_id")
    cli = pd.read_csv(root / "work" / "predict" / "predictions.csv").set_index("patient_id")
    for pid in patients[:-1]:
        assert got.loc[pid, "status"] == "scored"
        assert got.loc[pid, "predicted"] == cli.loc[pid, "predicted"]
        assert abs(got.loc[pid, [c for c in got.columns if c.startswith("prob_")]].sum() - 1) < 1e-4
    assert got.loc[patients[-1], "status"] == "not scored" and "expression" in got.loc[patients[-1], "reason"]
    # the same model by its run: runs:/<run id of the champion's child run>/model
    run_id = json.loads((root / "work" / "runs.json").read_text())["models"][champion]
    with allow_roots([root]):
        by_run = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(frame.iloc[:2]).set_index("patient_id")
    for pid in patients[:2]:
        assert by_run.loc[pid, "predicted"] == got.loc[pid, "predicted"]


def test_predictions_cover_every_patient_and_name_the_modalities_used(workflow):
    root, _ = workflow
    truth = json.loads((root / "data" / "demo_truth.json").read_text())
    preds = pd.read_csv(root / "work" / "predict" / "predictions.csv", keep_default_na=False).set_index("patient_id")
    assert set(preds.index) == set(truth["patients"])
    for pid, t in truth["patients"].items():
        lacking = t["missing"].split("+") if t["missing"] else []  # one modality, or all but one
        assert not set(lacking) & set(preds.loc[pid, "modalities"].split("+"))
    unlabelled = next(b["patient_id"] for b in truth["bad_inputs"] if b["kind"] == "unlabelled_patient")
    assert preds.loc[unlabelled, "status"] == "scored"  # no label: still predicted


def test_rerun_with_the_same_config_encodes_nothing(workflow):
    root, _ = workflow
    again = _cli("encode", "wf.yaml", cwd=root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "image: 0 encoded" in again.stdout and "note: 0 encoded" in again.stdout
    assert "from cache, 0 failed" in again.stdout


def test_no_patient_identifier_name_or_note_text_reaches_mlflow(workflow):
    root, _ = workflow
    truth = json.loads((root / "data" / "demo_truth.json").read_text())
    some_dicom = next(p for p in (root / "data" / "dicom").rglob("*") if p.is_file() and p.suffix != ".txt")
    ds = pydicom.dcmread(some_dicom, stop_before_pixels=True)
    notes = pd.read_csv(root / "data" / "notes.csv", keep_default_na=False)
    canaries = [*truth["patients"], str(ds.PatientName), str(ds.AccessionNumber)]
    canaries += [t for t in notes["text"] if len(t) > 40][:20]
    blob = b"".join(p.read_bytes() for p in (root / "tracking").rglob("*") if p.is_file())
    found = [c for c in canaries if c.encode() in blob]
    assert not found, found[:5]


def test_errors_are_one_line_without_traceback(workflow, tmp_path):
    root, _ = workflow
    bad = root / "typo.yaml"
    bad.write_text((root / "wf.yaml").read_text().replace("workdir:", "workdri:"))
    result = _cli("train", str(bad), cwd=root)
    assert result.returncode == 1
    assert "did you mean 'workdir'" in result.stderr and "Traceback" not in result.stderr
    result = _cli(
        "predict",
        "data/dataset.yaml",
        "--model",
        "models:/no-such-model@champion",
        "--out",
        str(tmp_path / "p.csv"),
        cwd=root,
    )
    assert result.returncode == 1 and "cannot load model" in result.stderr and "Traceback" not in result.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_rerun_skips_up_to_date_stages_and_resumes_after_an_interrupted_one(workflow):
    root, _ = workflow
    again = _cli("run", "wf.yaml", "--no-progress", cwd=root)
    assert again.returncode == 0, again.stderr[-2000:]
    for stage in ("ingest", "encode", "train", "evaluate", "register", "predict"):
        assert f"{stage} skipped (up to date)" in again.stdout
    # an evaluate stage killed half way leaves no record: the rerun resumes there; it produces the same
    # metrics, so the stages after it (whose records chain to evaluate's output digest) stay current
    (root / "work" / "evaluate" / "stage.json").unlink()
    resumed = _cli("run", "wf.yaml", "--no-progress", cwd=root)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "train skipped (up to date)" in resumed.stdout and "evaluate ran" in resumed.stdout
    assert "register skipped (up to date)" in resumed.stdout
    # a changed registry setting makes register and what follows stale, and nothing before it
    data = yaml.safe_load((root / "wf.yaml").read_text())
    data["tracking"]["alias"] = "candidate"
    (root / "wf.yaml").write_text(yaml.safe_dump(data))
    changed = _cli("run", "wf.yaml", "--no-progress", cwd=root)
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert "evaluate skipped (up to date)" in changed.stdout
    assert "register ran" in changed.stdout and "predict ran" in changed.stdout
    assert f"models:/{MODEL}@candidate" in changed.stdout


def test_promote_points_an_alias_at_a_version(workflow):
    from mlflow import MlflowClient

    root, _ = workflow
    uri = f"sqlite:///{root}/tracking/mlflow.db"
    env_uri = ["--tracking-uri", uri]
    result = _cli("promote", MODEL, "1", "--alias", "challenger", *env_uri, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(MlflowClient(uri, registry_uri=uri).get_model_version_by_alias(MODEL, "challenger").version) == "1"
    missing = _cli("promote", MODEL, "99", "--alias", "challenger", *env_uri, cwd=root)
    assert missing.returncode == 1 and "has no version '99'" in missing.stderr


def test_predict_by_version_uri_writes_dicom_sr_into_the_source_studies(workflow, tmp_path):
    import highdicom as hd

    from clinicmm.ingest.cohort import Cohort

    root, _ = workflow
    uri = f"sqlite:///{root}/tracking/mlflow.db"
    result = _cli(
        "predict",
        "data/dataset.yaml",
        "--model",
        f"models:/{MODEL}/1",
        "--out",
        str(tmp_path / "p.csv"),
        "--dicom-sr",
        str(tmp_path / "sr"),
        "--tracking-uri",
        uri,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    index = pd.read_csv(tmp_path / "sr" / "sr_index.csv", keep_default_na=False).set_index("patient_id")
    preds = pd.read_csv(tmp_path / "p.csv", keep_default_na=False).set_index("patient_id")
    series = Cohort.load(root / "work" / "ingest").series
    ok_series = series[series["status"] == "ok"].set_index("patient_id")
    written = index[index["status"] == "ok"]
    assert len(written) == len(ok_series)  # every patient with an image series and a prediction
    pid = written.index[0]
    sr = hd.sr.srread(written.loc[pid, "sr_path"])
    source = pydicom.dcmread(ok_series.loc[pid, "files"][0], stop_before_pixels=True)
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    assert preds.loc[pid, "predicted"] in str(sr.ContentSequence)
    no_image = index[index["status"] != "ok"]
    assert all(r for r in no_image["reason"])  # those without a series are listed with why


def test_predict_on_another_gene_panel_scores_the_patients_and_says_how_many(workflow, tmp_path):
    """A second demo cohort draws its own background genes (``demo.omics_writer.gene_panel``), so it measures only
    part of the model's panel: every patient is still scored, and the summary and columns say which ones."""
    root, _ = workflow
    assert _cli("demo-data", str(tmp_path / "other"), "--patients", "12", "--seed", "11", cwd=root).returncode == 0
    uri = f"sqlite:///{root}/tracking/mlflow.db"
    args = ("--model", f"models:/{MODEL}/1", "--out", str(tmp_path / "p.csv"), "--tracking-uri", uri)
    result = _cli("predict", str(tmp_path / "other" / "dataset.yaml"), *args, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    preds = pd.read_csv(tmp_path / "p.csv")
    with_omics = preds["omics_measured"].notna()
    low = int((preds["omics_measured"] < 0.5).sum())
    assert with_omics.any() and low == with_omics.sum() and (preds["status"] == "scored").all()
    assert f"{low} scored on under 50% of the model's omics features" in " ".join(result.stdout.split())
    assert preds.loc[with_omics, "reason"].str.contains("of the model's omics features measured").all()
