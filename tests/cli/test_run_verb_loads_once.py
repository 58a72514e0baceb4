"""`clinicmm run` loads the workflow YAML once and still shows the tracking URI as the user wrote it."""

from collections import Counter

import pandas as pd
import yaml
from typer.testing import CliRunner

import clinicmm.config
import clinicmm.pipeline.run
from clinicmm.cli import app


def _summary(wf, progress, force):
    from clinicmm.pipeline.run import RunSummary
    from clinicmm.pipeline.stages import Predicted
    from clinicmm.serve.register import Registration

    results = pd.DataFrame([{"model": "concat", "n_test": 1}])
    registered = Registration("m", "1", "champion", "models:/m@champion", "sqlite:///mlruns/mlflow.db")
    return RunSummary({"ingest": "ran"}, results, registered, Predicted("preds.csv", 1, 1))


def test_run_loads_the_workflow_once_and_shows_the_relative_default_uri(small_demo, tmp_path, monkeypatch):
    from mlflow.tracking._tracking_service import utils

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # no URI given (configure() exports the absolute one; undone after)
    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)  # MLflow's own global, restored after the test
    (tmp_path / "wf.yaml").write_text(
        yaml.safe_dump({"name": "once", "dataset": str(small_demo[0]), "workdir": "work"})
    )
    loads: Counter = Counter()
    load_workflow = clinicmm.config.load_workflow

    def counting(path):
        loads[str(path)] += 1
        return load_workflow(path)

    monkeypatch.setattr(clinicmm.config, "load_workflow", counting)
    monkeypatch.setattr(clinicmm.pipeline.run, "run", _summary)
    result = CliRunner().invoke(app, ["run", "wf.yaml", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sum(loads.values()) == 1
    assert "mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db" in result.output  # as written, not absolute
