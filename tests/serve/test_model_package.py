"""What the registered model carries: a full multimodal synthetic input example that scores, and the training dataset
as its MLflow input (source and digest, no patient data)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
from conftest import Served
from mlflow.models import Model

from clinicmm.serve.example import EXAMPLE_ID, input_example
from clinicmm.serve.register import log_dataset_input


def test_the_saved_model_carries_an_image_and_note_example_that_scores(served: Served):
    example = Model.load(str(served.path)).load_input_example(str(served.path))
    row = example.iloc[0]
    assert row["patient_id"] == EXAMPLE_ID and row["dicom_files"] == ""  # DICOM in the request: no server path
    files = [base64.b64decode(b) for b in json.loads(row["dicom_b64"])]
    assert files and all(f[128:132] == b"DICM" for f in files)
    assert json.loads(row["notes"])
    out = served.model.predict(example)
    assert out["status"].iloc[0] == "scored", out["reason"].iloc[0]
    assert out["modalities"].iloc[0] == "image+note"


def test_the_example_has_omics_where_the_model_was_trained_on_them(tmp_path: Path):
    (tmp_path / "model.json").write_text(json.dumps({"fingerprints": {"image": "a" * 64, "note": "b" * 64}}))
    from clinicmm.encode.genomics import GenomicsPreprocessor

    train = pd.DataFrame({"EGFR": [3.0, 7.0, 15.0], "TP53": [1.0, 1.0, 7.0]}, index=["P1", "P2", "P3"])
    mutations = pd.DataFrame({"patient_id": ["P1", "P2"], "gene": ["KRAS"] * 2, "non_silent": [True] * 2})
    pre = GenomicsPreprocessor("counts").fit(train, mutations.assign(status="ok"))
    (tmp_path / "genomics.json").write_text(json.dumps(pre.to_dict()))
    row = input_example(tmp_path).iloc[0]
    expression = json.loads(row["expression"])  # the whole panel at the training mean: log2(x + 1) undone
    expected = {"EGFR": 2 ** ((2 + 3 + 4) / 3) - 1, "TP53": 2 ** ((1 + 1 + 3) / 3) - 1}
    assert expression.keys() == expected.keys()
    assert all(abs(expression[g] - expected[g]) < 1e-5 for g in expected)
    assert (pre.zscores(pd.DataFrame([expression], index=["X"]), ["X"]).abs() < 1e-6).all(axis=None)
    assert json.loads(row["mutations"]) == ["KRAS"]
    assert row["dicom_b64"] and row["notes"]
    (tmp_path / "genomics.json").unlink()  # no genomics, no note encoder: those columns stay empty
    (tmp_path / "model.json").write_text(json.dumps({"fingerprints": {"image": "a" * 64}}))
    row = input_example(tmp_path).iloc[0]
    assert row["expression"] == row["mutations"] == row["notes"] == "" and row["dicom_b64"]


def test_the_dataset_input_has_the_workflow_datasets_source_and_digest(tmp_path: Path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        yaml = tmp_path / "data" / "cohort.yaml"
        wf = SimpleNamespace(dataset_path=yaml)
        digest = "ab" * 32
        exp = mlflow.set_experiment("dataset-input").experiment_id  # not an experiment id left by another test
        with mlflow.start_run(experiment_id=exp) as parent:
            mlflow.set_tag("clinicmm.dataset_digest", digest)
        client = mlflow.MlflowClient()
        with mlflow.start_run(experiment_id=exp) as run:
            log_dataset_input(wf, client, {"parent": parent.info.run_id})
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert len(inputs) == 1
        dataset = inputs[0].dataset
        assert dataset.name == "cohort" and dataset.digest == digest[:16]
        assert json.loads(dataset.source)["uri"] == yaml.as_uri()
        assert [t.value for t in inputs[0].tags if t.key == "mlflow.data.context"] == ["training"]
        logged = client.get_run(run.info.run_id).data
        assert not logged.params and not logged.metrics  # no patient data besides: nothing else logged
    finally:
        mlflow.set_tracking_uri(None)


def test_the_example_frame_is_strings_only():
    example = input_example()
    assert isinstance(example, pd.DataFrame) and len(example) == 1
    assert all(isinstance(v, str) for v in example.iloc[0].tolist())


def test_register_logs_the_served_model_and_links_the_dataset_to_it(served: Served, tmp_path: Path):
    """The register stage's path: ``save_served_model`` logged in a run and registered, the dataset input linked to
    the logged model."""
    from clinicmm.serve.register import save_served_model

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        client = mlflow.MlflowClient()
        exp = mlflow.set_experiment("register").experiment_id  # not an experiment id left by another test
        with mlflow.start_run(experiment_id=exp) as parent:
            mlflow.set_tag("clinicmm.dataset_digest", "cd" * 32)
        with mlflow.start_run(experiment_id=exp) as run:
            info = save_served_model(
                served.path / "artifacts" / "bundle", [str(served.layout.root)], registered_model_name="t", code=False
            )
            log_dataset_input(SimpleNamespace(dataset_path=tmp_path / "d.yaml"), client, {"parent": parent.info.run_id},
                              info.model_id)  # fmt: skip
        assert str(info.registered_model_version) == "1"
        assert info.model_uri and Model.load(info.model_uri).saved_input_example_info  # the example travels
        inputs = client.get_run(run.info.run_id).inputs
        assert inputs.dataset_inputs[0].dataset.digest == "cd" * 8
        assert [m.model_id for m in inputs.model_inputs] == [info.model_id]
    finally:
        mlflow.set_tracking_uri(None)
