"""Two CPU processes (torchrun, DDP on gloo) against one: same test metrics, shards cover the cohort, one MLflow run.

The two-process run is the real command a cluster user types, ``torchrun --nproc_per_node 2 -m clinicmm run``,
on a small demo cohort (notes and genomics; the imaging stage is left out to keep the test short). The
one-process baseline runs the same stages in this process on the same dataset and seed.

Why the metrics can be compared tightly: dropout and modality dropout are off, ``training.batch_size`` is the
global batch (each of the two ranks takes half of every one-process batch, see clinicmm.training.loaders)
and DDP averages the two halves' gradients, so both runs take the same optimiser steps up to the order of
floating-point sums. TOLERANCE allows for that rounding, not for a different model.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.distributed, pytest.mark.usefixtures("one_thread")]

TOLERANCE = 0.02  # test macro-F1 / accuracy; val losses per epoch within 1e-3
MODELS = ["concat", "kg_gnn"]


def _cannot_spawn() -> str | None:
    """Why two gloo processes cannot run here (None when they can)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        return "torch.distributed with the gloo backend is not available in this torch build"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
    except OSError as exc:
        return f"cannot open a localhost socket for the process group ({exc})"
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot start a child process ({exc})"
    return None


def _workflow(root: Path, dataset: Path, name: str, training: dict) -> Path:
    spec = {
        "name": name,
        "dataset": str(dataset),
        "workdir": str(root / name),
        "models": MODELS,
        "primary_model": "kg_gnn",
        "training": {
            "max_epochs": 6,
            "patience": 3,
            "batch_size": 8,
            "hidden": 16,
            "dropout": 0.0,
            "modality_dropout": 0.0,
            "class_init": "random",
            "seed": 0,
            **training,
        },
        "tracking": {
            "uri": f"sqlite:///{root / name / 'mlruns' / 'mlflow.db'}",
            "experiment": name,
            "registered_model": name,
        },
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(two-process workflow, one-process workflow) after both ran on the same dataset."""
    reason = _cannot_spawn()
    if reason:
        pytest.skip(reason)
    from clinicmm.config import load_workflow
    from clinicmm.demo.generator import generate_demo
    from clinicmm.pipeline import stages as workflow
    from clinicmm.tracking.setup import configure

    root = tmp_path_factory.mktemp("ddp")
    generated = generate_demo(root / "demo", patients=24, seed=11, missing_rate=0.1, single_rate=0.0, slices=8, size=32)
    spec = yaml.safe_load(generated.read_text())
    spec.pop("imaging")
    dataset = generated.with_name("dataset_no_imaging.yaml")
    dataset.write_text(yaml.safe_dump(spec))
    two = _workflow(root, dataset, "two", {"strategy": "ddp", "devices": 2})
    one = _workflow(root, dataset, "one", {})

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "clinicmm",
        "run",
        str(two),
        "--no-progress",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    wf = load_workflow(one)
    configure(wf.tracking)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for stage in (workflow.ingest_stage, workflow.encode_stage, workflow.evaluate_stage):
            if stage is workflow.evaluate_stage:
                workflow.train_stage(wf, progress=False)
            stage(wf)
    return load_workflow(two), wf


def _results(wf) -> dict:
    return json.loads((wf.work / "evaluate" / "results.json").read_text())


def test_two_process_test_metrics_match_one_process(runs):
    two, one = runs
    r2, r1 = _results(two), _results(one)
    assert set(r2) == set(r1) == set(MODELS)
    for model in MODELS:
        for metric in ("macro_f1", "accuracy"):
            assert abs(r2[model][metric] - r1[model][metric]) <= TOLERANCE, (
                model,
                metric,
                r2[model][metric],
                r1[model][metric],
            )


def test_two_process_training_follows_the_one_process_curve(runs):
    two, one = runs
    for model in MODELS:
        h2 = json.loads((two.work / "train" / model / "history.json").read_text())
        h1 = json.loads((one.work / "train" / model / "history.json").read_text())
        assert len(h2) == len(h1) >= 2
        np.testing.assert_allclose([h["val_loss"] for h in h2], [h["val_loss"] for h in h1], atol=1e-3)
        np.testing.assert_allclose([h["train_loss"] for h in h2], [h["train_loss"] for h in h1], atol=1e-3)


def test_embedding_shards_cover_the_cohort_exactly_once(runs):
    from clinicmm.encode.featurizer import load_encoded
    from clinicmm.ingest.cohort import Cohort

    two, one = runs
    shards = [load_encoded(two, two.work / "encode" / "shards" / f"2-{r}") for r in (0, 1)]
    ids = [set(s.patients) for s in shards]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    cohort = Cohort.load(two.work / "ingest").patients(labelled=False)
    assert sorted(ids[0] | ids[1]) == sorted(cohort)
    assert sum(len(s.patients) for s in shards) == len(cohort)
    merged, single = load_encoded(two), load_encoded(one)
    raw = (two.work / "encode" / "evidence.json").read_text() + (
        two.work / "encode" / "shards" / "2-0" / "evidence.json"
    ).read_text()
    assert not any(p in raw for p in cohort)  # the workdir's evidence names patients by keyed pseudonym only
    assert merged.patients == single.patients
    for m, v in single.vectors.items():
        np.testing.assert_allclose(merged.vectors[m], v, atol=1e-5)  # NaN where a modality is absent, in both
    assert merged.links == single.links


def test_one_mlflow_run_per_fit(runs):
    from mlflow import MlflowClient

    two, _ = runs
    client = MlflowClient(two.tracking.tracking_uri())
    exp = client.get_experiment_by_name(two.tracking.experiment)
    found = client.search_runs([exp.experiment_id])
    stages = [r.data.tags.get("clinicmm.stage") for r in found]
    assert stages.count("workflow") == 1
    trained = sorted(r.data.tags.get("clinicmm.model") for r in found if r.data.tags.get("clinicmm.stage") == "train")
    assert trained == sorted(MODELS)
    parent = next(r for r in found if r.data.tags.get("clinicmm.stage") == "workflow")
    assert parent.data.params["training.strategy"] == "ddp" and parent.data.params["training.devices"] == "2"


def test_finished_train_stage_leaves_no_checkpoints_and_every_bundle(runs):
    two, _ = runs
    assert not (two.work / "checkpoints").exists()  # kept only while a fit may need resuming
    for model in MODELS:
        assert (two.work / "train" / model / "weights.safetensors").is_file()
