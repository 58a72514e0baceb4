"""clinicmm.pipeline.distributed in one process: the rank split, shards written, read back, redone and merged, launch checks.

Ranks are simulated by passing ``rank`` / ``world`` explicitly (the functions the encode stage calls under
torchrun take them from torch.distributed); the cohort has genomics only, so encoding needs no network.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from clinicmm.config import TrainingSpec
from clinicmm.encode import shards
from clinicmm.errors import ConfigError, StageError
from clinicmm.pipeline import distributed


@pytest.fixture(scope="module")
def encoded_setup(tmp_path_factory):
    """(cohort, featurizer, patients, one-process EncodedCohort) of a small genomics-only demo."""
    from clinicmm.config import WorkflowSpec, load_dataset
    from clinicmm.demo.generator import generate_demo
    from clinicmm.encode.featurizer import Featurizer, encode_cohort
    from clinicmm.encode.genomics import fit_genomics
    from clinicmm.ingest.cohort import ingest
    from clinicmm.knowledge.graph import load_knowledge

    root = tmp_path_factory.mktemp("shards")
    generated = generate_demo(root / "demo", patients=15, seed=2, missing_rate=0.2, slices=4, size=16)
    spec = yaml.safe_load(generated.read_text())
    spec.pop("imaging"), spec.pop("notes")
    dataset = generated.with_name("genomics_only.yaml")
    dataset.write_text(yaml.safe_dump(spec))
    wf = WorkflowSpec(name="shards", dataset=dataset, workdir=root / "work")
    cohort = ingest(load_dataset(dataset), wf.work / "ingest")
    featurizer = Featurizer(wf.encoders, load_knowledge(wf), fit_genomics(wf, cohort))
    patients = cohort.patients(labelled=False)
    return cohort, featurizer, patients, encode_cohort(cohort, featurizer, patients)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_partition_the_patients_evenly_and_stably(world):
    patients = [f"P{i:03d}" for i in range(23)]
    parts = [shards.shard(patients, r, world) for r in range(world)]
    assert sorted(p for part in parts for p in part) == patients
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts == [shards.shard(list(patients), r, world) for r in range(world)]


def test_shard_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2"):
        shards.shard(["a", "b"], 2, 2)


def test_merged_shards_equal_the_one_process_encode(encoded_setup, tmp_path):
    cohort, featurizer, patients, single = encoded_setup
    for r in range(3):
        shards.encode_shard(cohort, featurizer, patients, tmp_path, "k", r, 3)
    merged = shards.merge_shards(tmp_path, patients, "k", 3)
    assert merged.patients == single.patients
    assert merged.links == single.links
    for m, v in single.vectors.items():
        np.testing.assert_allclose(merged.vectors[m], v, atol=1e-6)
    assert merged.stats["omics"]["computed"] == single.stats["omics"]["computed"]


def test_finished_shards_are_read_back_and_a_crashed_one_is_redone(encoded_setup, tmp_path, monkeypatch):
    cohort, featurizer, patients, single = encoded_setup
    for r in range(2):
        shards.encode_shard(cohort, featurizer, patients, tmp_path, "k", r, 2)
    (shards.shard_dir(tmp_path, 1, 2) / shards.SHARD_RECORD).unlink()  # rank 1 died before finishing

    encoded_now: list[list[str]] = []
    real = shards.encode_cohort
    monkeypatch.setattr(shards, "encode_cohort", lambda c, f, ps: encoded_now.append(ps) or real(c, f, ps))
    with pytest.raises(StageError, match="shard 1 of 2"):
        shards.merge_shards(tmp_path, patients, "k", 2)
    for r in range(2):
        shards.encode_shard(cohort, featurizer, patients, tmp_path, "k", r, 2)
    assert encoded_now == [shards.shard(patients, 1, 2)]  # rank 0's finished shard was not encoded again
    merged = shards.merge_shards(tmp_path, patients, "k", 2)
    np.testing.assert_allclose(merged.vectors["omics"], single.vectors["omics"], atol=1e-6)


def test_a_shard_of_other_settings_is_encoded_again(encoded_setup, tmp_path, monkeypatch):
    cohort, featurizer, patients, _ = encoded_setup
    shards.encode_shard(cohort, featurizer, patients, tmp_path, "old", 0, 2)
    calls: list[int] = []
    real = shards.encode_cohort
    monkeypatch.setattr(shards, "encode_cohort", lambda c, f, ps: calls.append(len(ps)) or real(c, f, ps))
    shards.encode_shard(cohort, featurizer, patients, tmp_path, "new", 0, 2)
    assert calls == [len(shards.shard(patients, 0, 2))]
    with pytest.raises(StageError):
        shards.merge_shards(tmp_path, patients, "old", 2)


@pytest.mark.parametrize(
    ("parts", "problem"),
    [
        ([["a", "b"], ["b", "c"]], "more than once"),
        ([["a"], ["c"]], "not encoded"),
        ([["a", "b"], ["c", "z"]], "not in the cohort"),
    ],
)
def test_exactly_once_check_names_the_problem(parts, problem):
    with pytest.raises(StageError, match=problem):
        shards.check_exactly_once(["a", "b", "c"], parts)
    shards.check_exactly_once(["a", "b", "c"], [["a", "c"], ["b"]])


def test_rank_and_world_come_from_the_launcher_environment(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert (distributed.rank(), distributed.world_size(), distributed.launched()) == (0, 1, False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert (distributed.rank(), distributed.world_size(), distributed.is_zero(), distributed.launched()) == (
        3,
        4,
        False,
        True,
    )
    assert distributed.agree("rank 0's answer") == "rank 0's answer"  # no process group joined: a no-op


def test_several_processes_without_a_launcher_is_a_config_error_with_the_command(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="torchrun --nproc_per_node 2"):
        distributed.check_launch(TrainingSpec(strategy="ddp", devices=2))
    distributed.check_launch(TrainingSpec(strategy="ddp_spawn", devices=2))  # Lightning spawns these itself
    distributed.check_launch(TrainingSpec())


def test_launcher_and_yaml_must_agree_on_the_process_count(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="started 4 processes"):
        distributed.check_launch(TrainingSpec(strategy="ddp", devices=2))
    distributed.check_launch(TrainingSpec(strategy="ddp", devices=2, num_nodes=2))
    distributed.check_launch(TrainingSpec(strategy="ddp", devices=[0, 1, 2, 3]))


def test_training_keys_are_validated_and_typos_suggested(tmp_path):
    from clinicmm.config import load_workflow

    spec = TrainingSpec(accelerator="gpu", devices="auto", num_nodes=2, strategy="ddp", precision="bf16-mixed")
    assert (spec.devices, spec.num_nodes, spec.precision) == ("auto", 2, "bf16-mixed")
    (tmp_path / "d.yaml").write_text("name: d\nnotes: {path: n.csv}\n")
    (tmp_path / "n.csv").write_text("patient_id,text\n")
    for training, message in (("{device: 2}", "did you mean 'devices'"), ("{precision: fp8}", "precision")):
        (tmp_path / "w.yaml").write_text(f"name: w\ndataset: d.yaml\nworkdir: work\ntraining: {training}\n")
        with pytest.raises(ConfigError, match=message):
            load_workflow(tmp_path / "w.yaml")
