"""clinicmm explain: Grad-CAM PNG of a patient's image from the trained image encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from trained_image_fixture import dataset, trained_workflow, workflow_yaml  # noqa: E402

from clinicmm.errors import InputError, StageError  # noqa: E402
from clinicmm.pipeline.run import explain_image  # noqa: E402
from clinicmm.serve import gradcam  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    return trained_workflow(tmp_path_factory)


def _patient(wf) -> tuple[str, list[str]]:
    from clinicmm.ingest.cohort import Cohort, patient_inputs

    cohort = Cohort.load(wf.work / "ingest")
    patients = cohort.patients("test")
    series = patient_inputs(cohort, patients)["series"]
    return next((p, s) for p, s in zip(patients, series) if s)


def test_saliency_is_finite_non_constant_and_the_size_of_the_input(trained) -> None:
    wf, record = trained
    _, files = _patient(wf)
    volume, sal, probs = gradcam.saliency(wf, files, len(record.classes))
    assert sal.shape == volume.shape == (8, 32, 32)
    assert np.isfinite(sal).all() and sal.max() == pytest.approx(1.0) and sal.min() >= 0 and sal.std() > 0
    assert probs.shape == (len(record.classes),) and probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_explain_writes_a_png_named_by_pseudonym_and_logs_it(trained, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from clinicmm.privacy.pseudonym import pseudonym, workflow_key

    wf, record = trained
    patient, _ = _patient(wf)
    r = explain_image(wf, patient, tmp_path / "out")
    png = Path(r["png"])
    assert png.parent == tmp_path / "out" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert patient not in png.name and r["pseudonym"] == pseudonym(patient, workflow_key(wf)) in png.name
    assert r["predicted"] in record.classes and 0 <= r["slice"] < 8
    logged = [a.path for a in MlflowClient().list_artifacts(r["run_id"], "gradcam")]
    assert f"gradcam/{png.name}" in logged


def test_explain_refuses_without_the_train_image_stage(trained, tmp_path: Path) -> None:
    from clinicmm.config import load_workflow

    wf = load_workflow(workflow_yaml(tmp_path, dataset(), "{network: resnet10, spatial_size: [8, 32, 32]}"))
    with pytest.raises(StageError, match="not meaningful.*clinicmm train-image"):
        explain_image(wf, "DEMO-0001")


def test_an_unknown_patient_is_named_in_the_error(trained) -> None:
    wf, _ = trained
    with pytest.raises(InputError, match="NO-SUCH-PATIENT"):
        explain_image(wf, "NO-SUCH-PATIENT")
