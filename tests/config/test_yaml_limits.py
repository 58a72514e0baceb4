"""Hostile YAML configs are refused quickly, without echoing their content."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from clinicmm.config import load_dataset, load_workflow
from clinicmm.config.loading import MAX_YAML_BYTES, read_yaml
from clinicmm.errors import ConfigError


def _billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def _workflow(tmp_path: Path, extra: str = "", **keys) -> Path:
    (tmp_path / "labels.csv").write_text("patient_id,cancer_type\nP1,LUAD\n")
    (tmp_path / "ds.yaml").write_text(
        yaml.safe_dump({"name": "t", "labels": {"path": "labels.csv"}, "notes": {"path": "labels.csv"}})
    )
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump({"name": "w", "dataset": "ds.yaml", "workdir": "work", **keys}) + extra)
    return path


def test_an_alias_bomb_is_refused_at_once_without_expanding_it(tmp_path):
    path = _workflow(tmp_path, _billion_laughs())
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"wf\.yaml: the YAML expands to more than \d+ values") as exc:
        load_workflow(path)
    assert time.monotonic() - start < 5
    assert "lol" not in str(exc.value) and len(str(exc.value)) < 400


def test_a_few_anchors_and_aliases_still_work(tmp_path):
    path = _workflow(tmp_path, "x-train: &t {max_epochs: 7, patience: 3}\n")
    text = path.read_text().replace("x-train:", "training: ").replace("x-train", "training")
    path.write_text(text)
    data = read_yaml(path)
    assert data["training"] == {"max_epochs": 7, "patience": 3}
    path.write_text(text + "compare: {folds: 3}\n")
    assert load_workflow(path).training.max_epochs == 7


def test_a_self_referring_or_deeply_nested_document_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="refers to itself|nests"):
        read_yaml(path)
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nest"):
        read_yaml(path)


def test_a_file_larger_than_a_config_is_refused_by_its_size(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n# " + "z" * MAX_YAML_BYTES + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: \d+ bytes, more than a config's limit") as exc:
        load_dataset(path)
    assert "zzz" not in str(exc.value)


def test_a_bad_value_is_one_line_naming_the_key_the_value_and_the_fix(tmp_path):
    path = _workflow(tmp_path, training={"max_epochs": "many", "lr": 0.01})
    with pytest.raises(ConfigError) as exc:
        load_workflow(path)
    msg = str(exc.value)
    assert "training.max_epochs" in msg and "'many'" in msg and "fix the value of 'training.max_epochs'" in msg
    assert "\n" not in msg and "'lr'" not in msg and "workdir" not in msg  # not the whole config


def test_a_huge_bad_value_is_summarised_not_printed(tmp_path):
    path = _workflow(tmp_path, training={"max_epochs": list(range(5000))})
    with pytest.raises(ConfigError) as exc:
        load_workflow(path)
    msg = str(exc.value)
    assert "a list of 5000 items" in msg and "4999" not in msg and len(msg) < 400
    path = _workflow(tmp_path, training={"max_epochs": "x" * 10_000})
    with pytest.raises(ConfigError) as exc:
        load_workflow(path)
    msg = str(exc.value)
    assert "training.max_epochs" in msg and "xxx..." in msg and len(msg) < 400


def test_a_whole_file_check_does_not_dump_the_config(tmp_path):
    path = _workflow(tmp_path, models=["image"], primary_model="kg_gnn", training={"lr": 0.0123})
    with pytest.raises(ConfigError, match="primary_model 'kg_gnn' is not in models") as exc:
        load_workflow(path)
    assert "0.0123" not in str(exc.value) and "ds.yaml" not in str(exc.value)
