"""Config validation: every mistake is one clear message naming the file, the key and the fix."""

from pathlib import Path

import pytest
import yaml

from clinicmm.config import DEFAULT_TRACKING_URI, TrackingSpec, load_dataset, load_workflow
from clinicmm.errors import ConfigError


def _dataset(tmp_path: Path, **overrides) -> Path:
    (tmp_path / "labels.csv").write_text("patient_id,cancer_type\nP1,LUAD\n")
    (tmp_path / "notes.csv").write_text("patient_id,text\nP1,hello\n")
    data = {
        "name": "t",
        "labels": {"path": "labels.csv"},
        "notes": {"path": "notes.csv"},
    }
    data.update(overrides)
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_valid_dataset_resolves_paths_against_the_yaml_folder(tmp_path):
    spec = load_dataset(_dataset(tmp_path))
    assert spec.resolve(spec.notes.path) == (tmp_path / "notes.csv").resolve()
    assert spec.notes.text_column == "text"


def test_typo_in_a_key_names_it_and_suggests_the_right_one(tmp_path):
    path = _dataset(tmp_path, notes={"path": "notes.csv", "text_colum": "body"})
    with pytest.raises(ConfigError) as exc:
        load_dataset(path)
    msg = str(exc.value)
    assert str(path.resolve()) in msg and "notes.text_colum" in msg and "did you mean 'text_column'" in msg


def test_missing_file_names_the_key_and_the_resolved_path(tmp_path):
    path = _dataset(tmp_path, labels={"path": "nope.csv"})
    with pytest.raises(ConfigError, match=r"labels\.path points at .*nope\.csv, which does not exist"):
        load_dataset(path)


def test_dataset_without_any_modality_is_refused(tmp_path):
    path = _dataset(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["notes"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="names no modality"):
        load_dataset(path)


def test_bad_yaml_syntax_gives_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nlabels: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line \d+: not valid YAML"):
        load_dataset(path)


def test_workflow_rejects_unknown_model_and_lists_valid_names(tmp_path):
    ds = _dataset(tmp_path)
    wf = tmp_path / "wf.yaml"
    wf.write_text(yaml.safe_dump({"name": "w", "dataset": ds.name, "workdir": "work", "models": ["concat", "gnn"]}))
    with pytest.raises(
        ConfigError, match=r"unknown model 'gnn'; valid names: image, note, omics, concat, kg_gnn, attention, kg_rgcn"
    ):
        load_workflow(wf)


def test_workflow_primary_model_must_be_listed_or_auto(tmp_path):
    ds = _dataset(tmp_path)
    wf = tmp_path / "wf.yaml"
    base = {"name": "w", "dataset": ds.name, "workdir": "work", "models": ["concat"]}
    wf.write_text(yaml.safe_dump(base | {"primary_model": "kg_gnn"}))
    with pytest.raises(ConfigError, match="primary_model 'kg_gnn' is not in models.*'auto'"):
        load_workflow(wf)
    wf.write_text(yaml.safe_dump(base))
    assert load_workflow(wf).primary_model == "auto"  # the default: the champion by validation


def test_tracking_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert TrackingSpec().tracking_uri() == DEFAULT_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert TrackingSpec().tracking_uri() == "http://127.0.0.1:5000"
    assert TrackingSpec(uri="sqlite:///x.db").tracking_uri() == "sqlite:///x.db"
