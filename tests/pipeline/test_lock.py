"""The workdir lock: one process per workdir, re-entrant within one, taken over from a dead holder; and the
MLflow store created safely when two processes start at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clinicmm.errors import ClinicmmError
from clinicmm.pipeline.lock import WorkdirBusy, held, lock_path, locked, workdir_lock

HOLD = """
import fcntl, json, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
f.seek(0); f.truncate(); f.write(json.dumps({"pid": 4242, "host": "ward-7", "verb": "train", "started": "then"}))
f.flush()
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes stdin
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path/work``'s lock until the test ends."""
    path = lock_path(tmp_path / "work")
    path.parent.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.stdin.close()
    proc.wait(60)


def test_a_second_process_fails_at_once_naming_the_holder_and_the_fix(tmp_path, holder):
    with pytest.raises(WorkdirBusy) as exc, workdir_lock(tmp_path / "work", "run"):
        pass
    msg = str(exc.value)
    assert isinstance(exc.value, ClinicmmError)
    assert "pid 4242 on host ward-7" in msg and "`clinicmm train`" in msg and "kill 4242" in msg
    assert "another workdir" in msg and not held(tmp_path / "work")


def test_the_lock_is_reentrant_records_this_process_and_is_released(tmp_path):
    work = tmp_path / "work"
    with workdir_lock(work, "run"):
        info = json.loads(lock_path(work).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["verb"] == "run"
        with workdir_lock(work, "train"):  # clinicmm run, then each stage
            assert held(work)
        assert held(work)
    assert not held(work) and lock_path(work).read_text() == ""
    probe = "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    assert subprocess.run([sys.executable, "-c", probe, str(lock_path(work))]).returncode == 0  # free for others


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, holder):
    holder.kill()  # SIGKILL: no cleanup; the lock file still names the dead holder
    holder.wait(60)
    assert json.loads(lock_path(tmp_path / "work").read_text())["pid"] == 4242
    with workdir_lock(tmp_path / "work", "run"):
        assert json.loads(lock_path(tmp_path / "work").read_text())["pid"] == os.getpid()


def test_stage_functions_take_the_lock(tmp_path, holder):
    class Wf:
        work = tmp_path / "work"

    calls = []
    stage = locked("encode")(lambda wf, progress=True: calls.append(progress))
    with pytest.raises(WorkdirBusy):
        stage(Wf())
    assert calls == []
    from clinicmm.pipeline import stages

    assert all(hasattr(fn, "__wrapped__") for fn in stages.FUNCTIONS.values())  # every stage is @locked


STORE = """
import sys
from clinicmm.config import TrackingSpec
from clinicmm.tracking.setup import configure, experiment_id
uri = configure(TrackingSpec(uri=sys.argv[1]))
print(experiment_id("race", uri))
"""


def test_two_processes_creating_one_mlflow_store_at_once_both_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STORE, uri], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [(p.wait(600), *p.communicate()) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err[-2000:] for _, _, err in results]
    assert len({out.strip() for _, out, _ in results}) == 1  # one experiment, shared
    assert Path(f"{tmp_path}/mlruns/mlflow.db.lock").is_file()
