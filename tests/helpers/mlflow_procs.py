"""Start and stop local MLflow processes (tracking server, model server) and drive the clinicmm CLI, for e2e tests.

Every process listens on 127.0.0.1 only, on a port picked by binding a socket to port 0, is started in its own
session (``start_new_session=True``) and stopped by killing that process group, so no worker is left behind.
Waits are bounded but generous (a busy machine is slow, not broken): a process that does not answer in time fails
the test with the tail of its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
CLI = str(BIN / "clinicmm")
MLFLOW = str(BIN / "mlflow")
HOST = "127.0.0.1"
HANG_GUARD_S = 3600  # a hang guard for whole-workflow subprocesses, not a speed limit


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow URIs (so only what a test sets counts), plus ``extra``.

    The venv's ``bin`` goes first on PATH: ``mlflow models serve`` execs ``uvicorn`` by name, which is not found
    when the tests run with ``.venv/bin/python`` from an environment that never activated the venv.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "HF_HUB_OFFLINE": "1", **extra})
    return env


@dataclass
class Proc:
    """A started server: its URL, the Popen and the log file that holds its stdout and stderr."""

    url: str
    popen: subprocess.Popen
    log: Path
    started_s: float = field(default=0.0)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else "(no log)"

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it if still there after ``grace_s``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # workers may outlive a leader that already exited
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def _start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_http(proc: Proc, path: str, timeout_s: float = 300.0) -> float:
    """Poll ``proc.url + path`` until it answers 200; returns the seconds waited; stops ``proc`` and raises on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc.popen.poll() is not None:
            break
        try:
            with urllib.request.urlopen(proc.url + path, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    code = proc.popen.poll()
    proc.stop()
    why = f"exited with {code}" if code is not None else f"did not answer {path} in {timeout_s:.0f} s"
    raise RuntimeError(f"{' '.join(map(str, proc.popen.args))} {why}; log tail:\n{proc.tail()}")


def start_tracking_server(root: Path, timeout_s: float = 300.0) -> Proc:
    """``mlflow server`` on a sqlite store in ``root``, proxying artifact uploads into ``root/artifacts``.

    No ``--default-artifact-root``: new experiments then get ``mlflow-artifacts:/`` locations, so clients upload
    through the server's HTTP API and never write the artifact folder themselves.
    """
    args = ["server", "--backend-store-uri", f"sqlite:///{root / 'srv.db'}", "--serve-artifacts"]
    args += ["--artifacts-destination", str(root / "artifacts")]
    env = clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    return _serve(args, env, root / "server.log", "/health", timeout_s)


def start_model_server(model_uri: str, tracking_uri: str, root: Path, timeout_s: float = 300.0) -> Proc:
    """``mlflow models serve`` of ``model_uri`` in this environment (``--env-manager local``), one worker."""
    env = clean_env(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_REGISTRY_URI=tracking_uri)
    return _serve(
        ["models", "serve", "-m", model_uri, "--env-manager", "local"], env, root / "serve.log", "/ping", timeout_s
    )


def _serve(args: list[str], env: dict[str, str], log: Path, health: str, timeout_s: float) -> Proc:
    """``mlflow ARGS`` on a free loopback port with one worker, logging to ``log``; returned once ``health`` answers."""
    port = free_port()
    cmd = [MLFLOW, *args, "--host", HOST, "--port", str(port), "--workers", "1"]
    proc = Proc(f"http://{HOST}:{port}", _start(cmd, log, env, log.parent), log)
    proc.started_s = wait_http(proc, health, timeout_s)
    return proc


def cli(*args: str, cwd: Path, timeout_s: float = HANG_GUARD_S) -> subprocess.CompletedProcess:
    """Run the venv's ``clinicmm`` console script (no MLflow URI in its environment); ``timeout_s`` is a hang guard
    only (a whole workflow takes minutes on a quiet machine and may take many times that on a busy one)."""
    return subprocess.run([CLI, *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout_s)


def demo_workflow(
    root: Path,
    tracking_uri: str,
    model: str,
    patients: int = 60,
    seed: int = 4,
    max_epochs: int = 25,
    patience: int = 6,
    **extra,
) -> tuple[subprocess.CompletedProcess, float]:
    """Generate a demo into ``root/data``, write ``root/wf.yaml`` tracking to ``tracking_uri`` and run it.

    ``extra`` adds top-level workflow keys (e.g. ``models=["kg_gnn"]``, ``encoders={...}``).

    Returns the ``clinicmm run`` result and its wall time in seconds; raises with stderr's tail if a step failed.
    """
    demo = cli("demo-data", "data", "--patients", str(patients), "--seed", str(seed), cwd=root)
    if demo.returncode != 0:
        raise RuntimeError(f"clinicmm demo-data failed:\n{demo.stderr[-3000:]}")
    wf = {
        "name": "srv",
        "dataset": "data/dataset.yaml",
        "workdir": "work",
        "knowledge": ["data/demo_edges.tsv"],  # the demo's own gene edges, as in workflows/demo.yaml
        "training": {"max_epochs": max_epochs, "patience": patience},
        "tracking": {"uri": tracking_uri, "experiment": "srv", "registered_model": model},
        **extra,
    }
    (root / "wf.yaml").write_text(yaml.safe_dump(wf))
    start = time.monotonic()
    run = cli("run", "wf.yaml", "--no-progress", cwd=root)
    took = time.monotonic() - start
    if run.returncode != 0:
        raise RuntimeError(f"clinicmm run failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return run, took
