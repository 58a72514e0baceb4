"""A served model builds everything once: no per-request rebuild of the graph, the encoders or the featurizer;
explanations are optional per request; the torch thread count follows $CLINICMM_THREADS or the CPUs it may use."""

from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import Served

from clinicmm.serve import pyfunc
from clinicmm.serve.explain import COLUMNS
from clinicmm.serve.scoring import INPUT_COLUMNS


def frame(served: Served, n: int = 2) -> pd.DataFrame:
    rows = [
        {
            "patient_id": f"p{i}",
            "dicom_files": json.dumps([str(f) for f in served.layout.series]),
            "notes": json.dumps([f"FINAL DIAGNOSIS: invasive adenocarcinoma, {i + 1} cm."]),
        }
        for i in range(n)
    ]
    return pd.DataFrame([{c: r.get(c, "") for c in INPUT_COLUMNS} for r in rows])


class Calls:
    """How often each wrapped function ran."""

    def __init__(self, monkeypatch) -> None:
        self.monkeypatch = monkeypatch
        self.count: dict[str, int] = {}

    def watch(self, owner, name: str) -> str:
        real = getattr(owner, name)
        key = f"{owner.__name__}.{name}"
        self.count[key] = 0

        def counted(*args, **kwargs):
            self.count[key] += 1
            return real(*args, **kwargs)

        self.monkeypatch.setattr(owner, name, counted)
        return key


def test_predict_rebuilds_no_graph_featurizer_or_encoder(served: Served, monkeypatch):
    from clinicmm.encode import featurizer
    from clinicmm.encode.imaging import encoder as image_encoder
    from clinicmm.encode.text import encoder as text_encoder
    from clinicmm.knowledge import concepts, graph

    served.model.predict(frame(served))  # the first request may wait for the warm-up; not counted
    calls = Calls(monkeypatch)
    calls.watch(graph.KnowledgeGraph, "to_hetero")
    calls.watch(featurizer.Featurizer, "__init__")
    calls.watch(image_encoder.ImageEncoder, "__init__")
    calls.watch(image_encoder, "build_network")
    calls.watch(text_encoder.TextEncoder, "__init__")
    calls.watch(concepts.ConceptMatcher, "__init__")
    from transformers import AutoModel, AutoTokenizer

    calls.watch(AutoModel, "from_pretrained")
    calls.watch(AutoTokenizer, "from_pretrained")
    for _ in range(2):
        out = served.model.predict(frame(served))
        assert (out["status"] == "scored").all(), out["reason"].tolist()
        assert (out["modalities"] == "image+note").all()
    assert calls.count == dict.fromkeys(calls.count, 0)


def test_explain_false_gives_the_same_predictions_without_the_explanation_work(served: Served, monkeypatch):
    from clinicmm.serve import explain

    calls = Calls(monkeypatch)
    key = calls.watch(explain, "explain")
    full = served.model.predict(frame(served, 3), params={"explain": True})
    assert calls.count[key] == 1
    bare = served.model.predict(frame(served, 3), params={"explain": False})
    assert calls.count[key] == 1  # not called again
    default = served.model.predict(frame(served, 3))  # explanations are opt-in: the default does no such work
    assert calls.count[key] == 1
    pd.testing.assert_frame_equal(default, bare)

    assert list(bare.columns) == list(full.columns)
    kept = [c for c in full.columns if c not in (*COLUMNS, "explanation")]
    probs = [c for c in kept if c.startswith("prob_")]
    np.testing.assert_allclose(bare[probs].astype(float), full[probs].astype(float), rtol=0, atol=1e-6)
    others = [c for c in kept if c not in probs]
    pd.testing.assert_frame_equal(bare[others], full[others])
    assert full["explanation"].str.len().gt(0).all() and full["share_image"].notna().all()
    assert (bare["explanation"] == "").all() and bare["share_image"].isna().all()
    assert (bare["top_path"].fillna("") == "").all()


def test_a_bad_explain_param_is_a_bad_request(served: Served):
    with pytest.raises(Exception, match="explain"):
        served.model.predict(frame(served, 1), params={"explain": "maybe"})


def test_threads_follow_the_environment_else_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CLINICMM_THREADS", "3")
    assert pyfunc.serving_threads() == 3
    monkeypatch.delenv("CLINICMM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert pyfunc.serving_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(pyfunc.os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)  # torch's default above the CPUs allowed: capped
    assert pyfunc.serving_threads() == 1


def test_load_context_sets_the_torch_threads(served: Served, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("CLINICMM_THREADS", "2")
    try:
        model = mlflow.pyfunc.load_model(str(served.path))
        assert torch.get_num_threads() == 2
        out = model.predict(frame(served, 1))
        assert out["status"].iloc[0] == "scored"
    finally:
        torch.set_num_threads(before)


def test_the_fusion_network_runs_on_its_own_thread_count_and_the_count_comes_back(served: Served, monkeypatch):
    from clinicmm.serve import scoring
    from clinicmm.training import fit

    seen = []
    real = fit.predict_proba

    def watched(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(fit, "predict_proba", watched)
    monkeypatch.delenv("CLINICMM_FUSION_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = served.model.predict(frame(served, 2), params={"explain": True})
        assert (out["status"] == "scored").all()
        assert seen == [1] and torch.get_num_threads() == 2  # the encoders' count is back for the next request
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("CLINICMM_FUSION_THREADS", "3")
    assert scoring.fusion_threads() == 3
    monkeypatch.setenv("CLINICMM_FUSION_THREADS", "many")
    assert scoring.fusion_threads() == 1
