"""A `clinicmm run` killed with SIGKILL at any stage, then run again, leaves the MLflow store as an uninterrupted run
does: the same FINISHED runs, the killed attempt's runs KILLED, none RUNNING, one registered version, no orphan
logged model, and the same predictions.

Each kill is a real SIGKILL of a real ``clinicmm run`` subprocess, sent by the process to itself at a chosen point
(a patched library call), so the test is deterministic on a busy machine. A genomics-only cohort keeps each run at
about 20 s.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("quiet_warnings")]

HANG_GUARD_S = 3600  # a hang guard only: a run takes ~20 s on a quiet machine

# the point where each attempt stops itself: (module, attribute) patched to send this process the signal when called
# (after the original ran, with after=True). SIGKILL leaves no chance to clean up; SIGTERM runs the handler first.
KILLS = {
    "train-sigterm": ("clinicmm.tracking.runs", "log_training", True, signal.SIGTERM),  # handler ends runs KILLED
    "train": ("clinicmm.tracking.runs", "log_training", True, signal.SIGKILL),  # parent + first model RUNNING
    "register-logged": ("mlflow.tracking._model_registry.fluent", "_register_model", False, signal.SIGKILL),
    "register-alias": ("mlflow.tracking.client.MlflowClient", "set_registered_model_alias", False, signal.SIGKILL),
    "predict": ("clinicmm.privacy.tracking", "log_safe_table", False, signal.SIGKILL),  # run logged, not recorded
}

RUNNER = """
import importlib, os, signal, sys
where = sys.argv[1]
if where != "none":
    module, attr, after, signum = {kills!r}[where]
    try:
        owner = importlib.import_module(module)
    except ImportError:
        path, cls = module.rsplit(".", 1)
        owner = getattr(importlib.import_module(path), cls)
    original = getattr(owner, attr)

    def killed(*args, **kwargs):
        if after:
            original(*args, **kwargs)
        os.kill(os.getpid(), signum)

    setattr(owner, attr, killed)
from clinicmm.cli import app
app(["run", "wf.yaml", "--no-progress"])
"""


def _run(root: Path, kill: str = "none") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    code = RUNNER.format(kills={k: (*v[:3], int(v[3])) for k, v in KILLS.items()})
    return subprocess.run(
        [sys.executable, "-c", code, kill], cwd=root, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S
    )


def _store(root: Path) -> dict:
    with sqlite3.connect(root / "mlruns" / "mlflow.db") as db:
        runs = db.execute("SELECT name, status FROM runs ORDER BY start_time").fetchall()
        logged = db.execute("SELECT model_id FROM logged_models WHERE lifecycle_stage = 'active'").fetchall()
        (source,) = db.execute("SELECT source FROM model_versions WHERE version = 1").fetchone() or ("",)
        versions = db.execute("SELECT version, source FROM model_versions").fetchall()
        aliases = db.execute("SELECT alias, version FROM registered_model_aliases").fetchall()
    return {"runs": runs, "logged": logged, "versions": versions, "aliases": aliases, "source": source}


def _workflow(root: Path, genomics_cohort, genomics_workflow) -> Path:
    genomics_cohort(root, 60)
    genomics_workflow(root, "killed", ["omics", "logreg"])
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, genomics_cohort, genomics_workflow):
    root = _workflow(tmp_path_factory.mktemp("uninterrupted"), genomics_cohort, genomics_workflow)
    done = _run(root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, _store(root)


def test_a_run_killed_at_every_stage_and_rerun_matches_an_uninterrupted_run(
    tmp_path, reference, genomics_cohort, genomics_workflow
):
    ref_root, ref = reference
    root = _workflow(tmp_path, genomics_cohort, genomics_workflow)
    for kill, (*_, signum) in KILLS.items():
        attempt = _run(root, kill)
        assert attempt.returncode == -signum, f"{kill}: {attempt.returncode}\n{attempt.stderr[-3000:]}"
        running = [s for _, s in _store(root)["runs"]].count("RUNNING")
        if kill == "train-sigterm":  # the handler ended the parent and the model run as KILLED before dying
            assert running == 0 and [s for _, s in _store(root)["runs"]].count("KILLED") == 2
        if kill == "train":  # SIGKILL: the attempt left its parent and first model run RUNNING
            assert running == 2
    done = _run(root)
    assert done.returncode == 0, done.stderr[-3000:]
    got = _store(root)

    statuses = {s for _, s in got["runs"]}
    assert "RUNNING" not in statuses, got["runs"]
    finished = sorted(n for n, s in got["runs"] if s == "FINISHED")
    assert finished == sorted(n for n, s in ref["runs"] if s == "FINISHED")  # nothing duplicated
    killed = sorted(n for n, s in got["runs"] if s == "KILLED")
    # the two training attempts (parent, its ingest and encode runs, the first model) and the predict attempt
    assert killed == sorted(2 * ["killed", "ingest", "encode", "omics"] + ["predict"]), got["runs"]
    # the version the register-alias attempt registered is reused, the logged model of register-logged deleted
    assert len(got["versions"]) == len(ref["versions"]) == 1 and got["aliases"] == [("champion", 1)]
    assert len(got["logged"]) == len(ref["logged"]) == 1 and got["source"] == f"models:/{got['logged'][0][0]}"

    ours = pd.read_csv(root / "work" / "predict" / "predictions.csv")
    theirs = pd.read_csv(ref_root / "work" / "predict" / "predictions.csv")
    pd.testing.assert_frame_equal(ours, theirs)


def test_a_second_run_on_the_same_workdir_fails_at_once_naming_the_first(reference, tmp_path):
    """The lock is a real flock: another process holding it makes `clinicmm run` stop before it touches anything."""
    root, _ = reference
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); f.write('{\"pid\": 4242, \"host\": \"elsewhere\", \"verb\": \"run\"}'); "
         "f.flush(); print('locked', flush=True); time.sleep(600)", str(root / "work" / ".lock")],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (root / "work" / "predict" / "stage.json").stat().st_mtime_ns
        second = _run(root)
        assert second.returncode == 1, second.stderr[-3000:]
        assert "pid 4242 on host elsewhere" in second.stderr and "Traceback" not in second.stderr
        assert (root / "work" / "predict" / "stage.json").stat().st_mtime_ns == before
    finally:
        holder.kill()
        holder.wait()
