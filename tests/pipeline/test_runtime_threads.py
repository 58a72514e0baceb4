"""``runtime.threads``: every stage runs with the configured CPU threads, by default the process's affinity
shared among the torchrun ranks of a node; the runs carry the count as a tag."""

from __future__ import annotations

import os

import pytest
import torch

from clinicmm.config import WorkflowSpec
from clinicmm.pipeline import runtime


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)


def test_the_default_is_the_affinity_shared_among_local_ranks(restore_threads, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    # an idle machine, whatever else runs here
    monkeypatch.setattr(runtime, "other_load", lambda cpus=None, seconds=0.0: 0.0)
    assert runtime.default_threads() == 6
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert runtime.default_threads() == 1  # 6 CPUs among 4 ranks: one each, never zero
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert runtime.apply(None) == 3 and torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"


def test_a_configured_count_wins_and_the_config_checks_it(restore_threads):
    assert runtime.apply(1) == 1 and torch.get_num_threads() == 1 and os.environ["MKL_NUM_THREADS"] == "1"
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        WorkflowSpec(name="w", dataset="d.yaml", runtime={"threads": 0})


def test_run_stage_applies_the_workflows_threads_and_runs_are_tagged(restore_threads, monkeypatch, tmp_path):
    from clinicmm.pipeline import run as pipeline_run
    from clinicmm.tracking.runs import THREADS_TAG, process_tags

    seen = []
    monkeypatch.setattr(pipeline_run.runtime, "apply", lambda threads: seen.append(threads) or 1)
    wf = WorkflowSpec(name="w", dataset=str(tmp_path / "d.yaml"), workdir=str(tmp_path / "work"),
                      runtime={"threads": 1})  # fmt: skip
    assert pipeline_run._run_stage(wf, "finetune-text", False, False) == "not configured"
    assert seen == [1]
    torch.set_num_threads(1)
    assert process_tags()[THREADS_TAG] == "1"
