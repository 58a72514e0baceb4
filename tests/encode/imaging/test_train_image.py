"""clinicmm train-image: training on the labels, the PersistentDataset cache, weights used by encode, ViT / 2D."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from trained_image_fixture import trained_workflow  # noqa: E402

from clinicmm.config import ImageEncoderSpec, ViTSpec  # noqa: E402
from clinicmm.encode.imaging import train  # noqa: E402
from clinicmm.encode.imaging.encoder import ImageEncoder  # noqa: E402
from clinicmm.errors import ModelError  # noqa: E402
from clinicmm.pipeline import registry as stages  # noqa: E402
from clinicmm.pipeline.run import run_stage  # noqa: E402


def _with_train(wf, changes: dict):
    """``wf`` with ``encoders.image.train`` updated by ``changes``."""
    image = wf.encoders.image
    train_spec = image.train.model_copy(update=changes)
    encoders = wf.encoders.model_copy(update={"image": image.model_copy(update={"train": train_spec})})
    return wf.model_copy(update={"encoders": encoders})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    return trained_workflow(tmp_path_factory)


def test_training_lowers_the_loss_and_writes_weights_head_and_record(trained) -> None:
    wf, record = trained
    losses = [h["train_loss"] for h in record.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert Path(record.weights).is_file() and Path(record.head).is_file()
    assert Path(record.weights) == wf.work / "train_image" / "weights.safetensors"
    saved = stages.summary(wf, "train-image")  # the stage registry's one record format
    assert saved["classes"] == record.classes and stages.is_current(wf, "train-image")
    assert record.series["train"] > 0 and record.series["val"] > 0 and record.series["failed"] == 0


def test_every_series_is_decoded_once_then_served_from_the_cache(trained) -> None:
    wf, record = trained
    s = record.series
    assert s["decoded"] == s["train"] + s["val"] and s["cached"] == 0  # first run: each series decoded once
    assert [h["decoded"] for h in record.history] == [0, 0, 0]  # the epochs read the cache only
    assert len(list(train.cache_dir(wf).glob("*.pt"))) == s["decoded"]


def test_a_rerun_with_augmentation_decodes_no_dicom(trained, monkeypatch, tmp_path: Path) -> None:
    import pydicom

    wf, record = trained
    kept = tmp_path / "kept"
    shutil.copytree(train.folder(wf), kept)  # the fixture's weights and record, for the other tests
    calls = []
    real = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = _with_train(wf, {"epochs": 1, "augment": True})
    rerun = train.train_image(again, progress=False)
    assert calls == []
    assert rerun.series["decoded"] == 0 and rerun.series["cached"] == record.series["decoded"]
    assert np.isfinite(rerun.history[0]["train_loss"])
    shutil.rmtree(train.folder(wf))
    shutil.copytree(kept, train.folder(wf))


def test_the_mlflow_run_has_epoch_metrics_and_no_patient_ids(trained) -> None:
    from mlflow import MlflowClient

    from clinicmm.tracking.setup import configure

    wf, record = trained
    configure(wf.tracking)
    client = MlflowClient()
    run = client.get_run(stages.summary(wf, "train-image")["run_id"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
    text = json.dumps([run.data.params, run.data.tags])
    assert "DEMO-" not in text and run.data.tags["clinicmm.stage"] == "train-image"


def test_encode_uses_the_trained_weights(trained) -> None:
    from safetensors.torch import load_file

    wf, record = trained
    trained_encoder = ImageEncoder(wf.encoders.image)
    base = ImageEncoder(train.base_spec(wf.encoders.image))
    assert trained_encoder.fingerprint() != base.fingerprint()
    saved = load_file(record.weights)
    state = trained_encoder.network.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())
    assert any(not torch.equal(base.network.state_dict()[k], v) for k, v in saved.items())
    assert "image_weights" in json.dumps(stages.stage("encode").settings(wf))
    assert run_stage(wf, "train-image", progress=False) == "skipped (up to date)"


def test_missing_trained_weights_fail_with_the_command_to_run(tmp_path: Path) -> None:
    from clinicmm.config import ImageTrainSpec

    spec = ImageEncoderSpec(spatial_size=(8, 32, 32), train=ImageTrainSpec(output=tmp_path / "none.safetensors"))
    with pytest.raises(ModelError, match="clinicmm train-image"):
        ImageEncoder(spec)


def test_new_settings_at_their_defaults_keep_the_fingerprint() -> None:
    plain = ImageEncoder(ImageEncoderSpec(spatial_size=(8, 32, 32))).fingerprint()
    assert ImageEncoder(ImageEncoderSpec(spatial_size=(8, 32, 32), vit=ViTSpec(hidden_size=64))).fingerprint() == plain
    assert ImageEncoder(ImageEncoderSpec(spatial_size=(8, 32, 32), spatial_dims=2)).fingerprint() != plain


@pytest.mark.parametrize(
    ("network", "dims"), [("vit", 3), ("vit", 2), ("resnet10", 2), ("densenet121", 2), ("resnet18", 3)]
)
def test_vit_and_2d_networks_build_and_embed(trained, network: str, dims: int) -> None:
    from clinicmm.ingest.cohort import Cohort, patient_inputs

    if network == "vit":
        pytest.importorskip("einops", reason="MONAI's ViT needs einops (pip install 'clinicmm[vit]')")
    wf, _ = trained
    cohort = Cohort.load(wf.work / "ingest")
    series = [s for s in patient_inputs(cohort, cohort.patients())["series"] if s][:2]
    spec = ImageEncoderSpec(
        network=network,
        spatial_dims=dims,
        spatial_size=(8, 32, 32),
        vit=ViTSpec(hidden_size=48, mlp_dim=96, num_layers=1, num_heads=2),
    )
    encoder = ImageEncoder(spec)
    vectors, failed = encoder.encode(series, progress=False)
    assert failed == {} and vectors.shape == (2, encoder.dim) and np.isfinite(vectors).all()
    assert not np.allclose(vectors[0], vectors[1])


def test_vit_without_einops_names_the_fix(monkeypatch) -> None:
    from clinicmm.errors import ConfigError

    monkeypatch.setitem(sys.modules, "einops", None)  # as if not installed: import einops raises ImportError
    with pytest.raises(ConfigError, match=r"einops.*clinicmm\[vit\]"):
        ImageEncoder(ImageEncoderSpec(network="vit", spatial_size=(8, 32, 32)))


def test_augmentation_is_random_but_seeded_and_keeps_the_shape() -> None:
    volume = {"image": torch.rand(1, 8, 32, 32)}
    first = [train.augmentation(seed=3)(dict(volume))["image"] for _ in range(2)]
    assert all(tuple(t.shape) == (1, 8, 32, 32) and torch.isfinite(torch.as_tensor(t)).all() for t in first)
    assert torch.equal(torch.as_tensor(first[0]), torch.as_tensor(first[1]))
    aug = train.augmentation(seed=3)
    outs = [torch.as_tensor(aug(dict(volume))["image"]) for _ in range(4)]
    assert any(not torch.allclose(o, volume["image"]) for o in outs)


def test_a_last_training_batch_of_one_series_is_dropped(trained) -> None:
    wf, _ = trained
    items = train.split_items(wf)[0]["train"]
    odd = _with_train(wf, {"batch_size": len(items) - 1})
    assert [len(b["label"]) for b in train._loader(odd, items, False, shuffle=True)] == [len(items) - 1]
    assert sum(len(b["label"]) for b in train._loader(odd, items, False, shuffle=False)) == len(
        items
    )  # validation: all
