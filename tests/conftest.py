"""Shared fixtures: a small demo cohort generated once per test session (real DICOM, notes, tables)."""

import json
import os
import sys
from pathlib import Path

import pytest

# helper modules shared by several test folders (DICOM writers, a tiny BERT, MLflow processes, a trained encoder)
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A 30-patient demo with every kind of bad input; returns (dataset.yaml path, truth dict)."""
    from clinicmm.demo.generator import generate_demo

    out = tmp_path_factory.mktemp("demo") / "cohort"
    path = generate_demo(out, patients=30, seed=5, missing_rate=0.2, inject_bad=True, slices=8, size=32)
    return path, json.loads((out / "demo_truth.json").read_text())


@pytest.fixture
def quiet_warnings():
    """Lightning and PyG warn on every tiny fit (few workers, deprecations); these tests assert on results."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def single_thread():
    """Tiny models: one intra-op thread avoids OpenMP spin-waiting on a shared, busy 2-core machine; the
    previous count is restored afterwards (a generator for the fixtures of any scope)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


one_thread = pytest.fixture(scope="module", name="one_thread")(single_thread)
one_thread_session = pytest.fixture(scope="session", name="one_thread_session")(single_thread)


def write_genomics_cohort(root, n: int, sites: list[str] | None = None):
    """A genomics-only cohort in ``root/data`` (no encoder networks to load): class-specific expression of 8 graph
    genes over BRCA, LUAD and COAD (patient i has class i % 3), and with ``sites`` a site column (site i % len).
    Returns the dataset.yaml path."""
    import numpy as np
    import pandas as pd
    import yaml

    rng = np.random.default_rng(0)
    genes = ["AKT1", "BAX", "CASP3", "TP53", "E2F1", "JAK1", "MAPK3", "IL6"]
    y = np.arange(n) % 3
    values = rng.lognormal(3, 0.3, size=(n, len(genes)))
    for c in range(3):
        values[y == c, 2 * c : 2 * c + 2] *= 6
    ids = [f"PT-{i:03d}" for i in range(n)]
    data = root / "data"
    data.mkdir()
    pd.DataFrame(values, columns=genes).assign(sample_id=ids).to_csv(data / "expr.tsv", sep="\t", index=False)
    labels = pd.DataFrame({"patient_id": ids, "cancer_type": [["BRCA", "LUAD", "COAD"][c] for c in y]})
    spec = {
        "name": "tiny",
        "labels": {"path": "labels.csv"},
        "genomics": {"expression": {"path": "expr.tsv", "unit": "tpm"}},
    }
    if sites:
        labels["site"] = [sites[i % len(sites)] for i in range(n)]
        spec["labels"]["site_column"] = "site"
        spec["split"] = {"leave_one_site_out": True}
    labels.to_csv(data / "labels.csv", index=False)
    (data / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return data / "dataset.yaml"


def write_genomics_workflow(root, name: str, models: list[str], **keys):
    """``root/wf.yaml``: a workflow on the cohort in ``root/data`` (write it first) with tiny, quick training, tracked
    in ``root/mlruns``; ``keys`` adds or replaces top-level keys. Returns the loaded WorkflowSpec."""
    import yaml

    from clinicmm.config import load_workflow

    wf = {
        "name": name,
        "dataset": "data/dataset.yaml",
        "workdir": "work",
        "models": models,
        "training": {"max_epochs": 3, "patience": 2, "hidden": 8, "batch_size": 16},
        "tracking": {"uri": f"sqlite:///{root}/mlruns/mlflow.db", "experiment": name, "registered_model": name},
    }
    (root / "wf.yaml").write_text(yaml.safe_dump(wf | keys))
    return load_workflow(root / "wf.yaml")


def write_encoded_genomics(root, n: int, name: str, models: list[str], **keys):
    """:func:`write_genomics_cohort` of ``n`` patients and :func:`write_genomics_workflow` over it in ``root``, ingested
    and encoded by the workflow's own stages; returns the WorkflowSpec."""
    from clinicmm.pipeline.stages import encode_stage, ingest_stage

    write_genomics_cohort(root, n)
    wf = write_genomics_workflow(root, name, models, **keys)
    ingest_stage(wf)
    encode_stage(wf)
    return wf


@pytest.fixture(scope="session")
def encoded_genomics():
    """:func:`write_encoded_genomics`."""
    return write_encoded_genomics


@pytest.fixture(scope="session")
def genomics_workflow():
    """:func:`write_genomics_workflow`."""
    return write_genomics_workflow


@pytest.fixture(scope="session")
def genomics_cohort():
    """:func:`write_genomics_cohort`, for tests that need a quick cohort without images or notes."""
    return write_genomics_cohort
