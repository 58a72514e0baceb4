"""Shared fixtures: a small demo cohort generated once per test session (real DICOM, notes, tables)."""

import json
import os

import pytest

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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread avoids OpenMP spin-waiting on a shared, busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
