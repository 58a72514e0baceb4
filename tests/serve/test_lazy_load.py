"""The served model loads fast and builds its heavy parts once, in the background: ``load_model`` returns before the
bundle, the fusion network and the encoders are built, the first ``predict`` waits for them, a bundle that cannot
be built fails each request with one message (no stack trace, no server path), and the thread count still holds for
the whole process when torch is first imported by the background build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import mlflow.pyfunc
import pandas as pd
import pytest
from conftest import Served
from mlflow.exceptions import MlflowException

from clinicmm.serve import pyfunc
from clinicmm.serve.scoring import INPUT_COLUMNS


def frame(served: Served) -> pd.DataFrame:
    row = {"patient_id": "p", "dicom_files": json.dumps([str(f) for f in served.layout.series]), "notes": "carcinoma"}
    return pd.DataFrame([{c: row.get(c, "") for c in INPUT_COLUMNS}])


def test_load_returns_before_the_parts_are_built_and_the_first_predict_waits_for_them(served: Served, monkeypatch):
    started, gate = threading.Event(), threading.Event()
    real = pyfunc._build_parts

    def held(folder):
        started.set()
        assert gate.wait(120)
        return real(folder)

    monkeypatch.setattr(pyfunc, "_build_parts", held)
    model = mlflow.pyfunc.load_model(str(served.path))  # returns although the build is held
    assert started.wait(120)
    inner = model.unwrap_python_model()
    assert inner._parts is None and inner._warm.is_alive()
    threading.Timer(0.2, gate.set).start()
    out = model.predict(frame(served))  # waits for the build, then scores
    assert out["status"].iloc[0] == "scored", out["reason"].iloc[0]
    assert inner._parts is not None and not inner._warm.is_alive()


def test_a_worker_without_the_warm_thread_builds_the_parts_on_its_first_request(served: Served):
    model = mlflow.pyfunc.load_model(str(served.path))
    inner = model.unwrap_python_model()
    inner._warm.join()
    inner._parts, inner._warm = None, None  # as in a process forked after the load: no thread, nothing built
    out = model.predict(frame(served))
    assert out["status"].iloc[0] == "scored", out["reason"].iloc[0]


def test_a_bundle_that_cannot_be_built_fails_every_request_with_one_message(served: Served, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(served.path, copy)
    (copy / "artifacts" / "bundle" / "weights.safetensors").write_bytes(b"not safetensors")
    model = mlflow.pyfunc.load_model(str(copy))  # the load itself stays short and succeeds
    for _ in range(2):
        with pytest.raises(MlflowException) as err:
            model.predict(frame(served))
        sent = json.loads(err.value.serialize_as_json())
        assert "could not be built" in sent["message"] and "ModelError" in sent["message"]
        assert "stack_trace" not in sent and str(tmp_path) not in sent["message"]


def test_a_bundle_without_model_json_fails_the_load(served: Served, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(served.path, copy)
    (copy / "artifacts" / "bundle" / "model.json").unlink()
    with pytest.raises(MlflowException, match="model.json"):
        mlflow.pyfunc.load_model(str(copy))


def test_threads_hold_in_a_fresh_process_where_the_background_build_imports_torch(served: Served):
    probe = (
        "import sys, mlflow.pyfunc; "
        f"m = mlflow.pyfunc.load_model({str(served.path)!r}); "
        "m.unwrap_python_model()._ready(); "
        "import torch; print(torch.get_num_threads())"
    )
    env = dict(os.environ, CLINICMM_THREADS="1")
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "1"
