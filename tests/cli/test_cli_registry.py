"""Registry messages of the CLI (--model checks, promote, versions) and MLflow's per-run links kept quiet.

A real sqlite registry with one model of two versions (alias champion -> 1); the commands run in-process.
"""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from clinicmm.cli import QUIET_RUN_LINKS, app

MODEL = "reg-model"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """(tracking URI, a dataset YAML path) with MLflow's global URIs restored after the test."""
    from mlflow import MlflowClient
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", QUIET_RUN_LINKS):
        monkeypatch.delenv(name, raising=False)  # restored after the test, whatever the CLI exports
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=str(tmp_path / "no-model"))
    client.set_registered_model_alias(MODEL, "champion", "1")
    dataset = tmp_path / "dataset.yaml"
    dataset.write_text("name: x\n")  # never read: the --model check comes first
    return uri, dataset


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, " ".join(result.output.split())  # one line, whatever the terminal width wrapped


def _predict(registry, model: str):
    uri, dataset = registry
    return _invoke("predict", str(dataset), "--model", model, "--tracking-uri", uri, "--out", str(dataset) + ".csv")


def test_a_bare_model_name_hints_at_a_models_uri(registry):
    result, text = _predict(registry, MODEL)
    assert result.exit_code == 1
    assert f"cannot load model '{MODEL}': not a model URI" in text and f"models:/{MODEL}@champion" in text
    assert f"clinicmm versions {MODEL} --tracking-uri {registry[0]}" in text
    assert "Traceback" not in result.output and result.output.count("error:") == 1


def test_an_unknown_alias_names_the_aliases_in_one_sentence(registry):
    result, text = _predict(registry, f"models:/{MODEL}@nope")
    assert result.exit_code == 1
    assert f"model '{MODEL}' has no alias 'nope' (aliases: champion → 1)" in text
    assert f"clinicmm promote {MODEL} VERSION --alias nope" in text
    assert ".." not in text


def test_an_unknown_version_or_model_names_what_exists(registry):
    result, text = _predict(registry, f"models:/{MODEL}/9")
    assert result.exit_code == 1 and "has no version 9 (versions: 1, 2)" in text
    result, text = _predict(registry, "models:/other@champion")
    assert result.exit_code == 1 and "no registered model 'other'" in text and f"(registered: {MODEL})" in text


def test_promote_suggests_a_command_that_lists_the_versions(registry):
    uri, _ = registry
    result, text = _invoke("promote", MODEL, "9", "--tracking-uri", uri)
    assert result.exit_code == 1 and "has no version '9' in this registry (versions: 1, 2)" in text
    suggested = re.search(r"list them with their aliases: clinicmm (versions \S+ --tracking-uri \S+)", text)
    assert suggested, text
    listed, table = _invoke(*suggested.group(1).split())  # the suggestion runs and lists the versions
    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in listed.output.splitlines()[3:]
            if line.count("│") > 3}  # fmt: skip
    assert rows == {"1": "champion", "2": "-"}
    moved, _ = _invoke("promote", MODEL, "2", "--alias", "champion", "--tracking-uri", uri)
    assert moved.exit_code == 0, moved.output
    _, table = _invoke("versions", "--tracking-uri", uri)  # every registered model, with its aliases
    assert f"{MODEL} │ 2 │ champion → 2" in table


def _link_lines(client, monkeypatch, capsys) -> str:
    """What MLflow prints to stdout when a run on a tracking server ends (``_log_url``, which ``end_run`` and
    ``set_terminated`` call); the server is faked: the store returns a run without a request."""
    run = SimpleNamespace(info=SimpleNamespace(experiment_id="1", run_name="train"), data=SimpleNamespace(tags={}))
    monkeypatch.setattr(type(client.store), "get_run", lambda self, run_id: run)
    capsys.readouterr()
    client._log_url("0123abcd")
    return capsys.readouterr().out


def test_mlflow_run_links_are_off_unless_verbose(registry, monkeypatch, capsys):
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    uri, _ = registry
    client = TrackingServiceClient("http://127.0.0.1:5000")
    assert "View run train at: http://127.0.0.1:5000" in _link_lines(client, monkeypatch, capsys)  # MLflow's default
    assert _invoke("versions", "--tracking-uri", uri)[0].exit_code == 0
    assert os.environ[QUIET_RUN_LINKS] == "true" and _link_lines(client, monkeypatch, capsys) == ""
    assert _invoke("--verbose", "versions", "--tracking-uri", uri)[0].exit_code == 0
    assert "View run train" in _link_lines(client, monkeypatch, capsys)


def test_the_environment_can_turn_the_links_back_on(registry, monkeypatch):
    monkeypatch.setenv(QUIET_RUN_LINKS, "false")
    assert _invoke("versions", "--tracking-uri", registry[0])[0].exit_code == 0
    assert os.environ[QUIET_RUN_LINKS] == "false"
