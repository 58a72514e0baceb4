"""A saved bundle carries the trained image weights and the LoRA adapter, so it loads where the workdir is gone.

The encoders' files are made tiny (a 1-layer ViT, a rank-2 adapter on the shipped MiniLM) and never trained:
only their bytes matter here. The originals are deleted after saving, then the bundle (and, through MLflow, the
registered model) must still rebuild encoders with the fingerprints recorded at training time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from clinicmm.config import EncodersSpec, ImageEncoderSpec, ImageTrainSpec, TextEncoderSpec, ViTSpec
from clinicmm.encode.imaging.encoder import ImageEncoder, feature_dim
from clinicmm.encode.text.encoder import TextEncoder
from clinicmm.errors import ModelError
from clinicmm.knowledge.graph import KnowledgeGraph
from clinicmm.tracking.bundle import ModelBundle
from clinicmm.training.data import Standardizer

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["LUAD", "BRCA", "COAD"]
VIT = ViTSpec(hidden_size=16, mlp_dim=16, num_layers=1, num_heads=2)


def _image_weights(path: Path) -> None:
    """Weights that differ from the seeded initialisation, so only loading this very file gives their fingerprint."""
    encoder = ImageEncoder(ImageEncoderSpec(network="vit", vit=VIT, spatial_size=(8, 16, 16)))
    with torch.no_grad():
        for p in encoder.network.parameters():
            p.add_(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder.save_weights(path)


def _adapter(folder: Path) -> None:
    """A rank-2 LoRA adapter on the shipped MiniLM with non-zero weights (so it changes the embeddings)."""
    from peft import LoraConfig, get_peft_model

    _, model = TextEncoder(TextEncoderSpec())._load()
    torch.manual_seed(0)
    peft = get_peft_model(
        model, LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], init_lora_weights=False)
    )
    peft.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A training workdir holding trained image weights and an adapter, as train-image / finetune-text leave them."""
    work = tmp_path_factory.mktemp("work")
    _image_weights(work / "train_image" / "weights.safetensors")
    _adapter(work / "finetune_text" / "adapter")
    return work


def _spec(work: Path) -> EncodersSpec:
    image = ImageEncoderSpec(
        network="vit",
        vit=VIT,
        spatial_size=(8, 16, 16),
        train=ImageTrainSpec(epochs=1, output=work / "train_image" / "weights.safetensors"),
    )
    return EncodersSpec(
        image=image, text=TextEncoderSpec(max_length=64, adapter_path=work / "finetune_text" / "adapter")
    )


def _bundle(kg: KnowledgeGraph, encoders: EncodersSpec) -> ModelBundle:
    dims = {"image": feature_dim(encoders.image), "note": 384, "omics": 4}
    scaler = Standardizer({m: [0.0] * d for m, d in dims.items()}, {m: [1.0] * d for m, d in dims.items()})
    fingerprints = {
        "image": ImageEncoder(encoders.image).fingerprint(),
        "note": TextEncoder(encoders.text).fingerprint(),
    }
    bundle = ModelBundle("concat", CLASSES, dims, 8, 0.1, encoders, fingerprints, scaler, {}, kg)
    torch.manual_seed(0)
    bundle.state_dict = dict(bundle.build_model(load_weights=False).state_dict())
    return bundle


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return KnowledgeGraph.default()


def test_bundle_carries_weights_and_adapter_and_loads_after_the_workdir_is_gone(tmp_path, workdir, kg) -> None:
    work = tmp_path / "work"
    shutil.copytree(workdir, work)
    bundle = _bundle(kg, _spec(work))
    before = _digest(work)
    folder = bundle.save(tmp_path / "bundle")

    assert _digest(work) == before, "the user's files changed"
    assert bundle.encoders == _spec(work), "saving changed the in-memory spec"
    saved = json.loads((folder / "model.json").read_text())["encoders"]
    assert saved["image"]["train"]["output"] == "encoders/image_weights.safetensors"
    assert saved["text"]["adapter_path"] == "encoders/text_adapter"
    assert str(work) not in json.dumps(saved), "model.json still names the workdir"

    shutil.rmtree(work)
    moved = shutil.move(str(folder), str(tmp_path / "elsewhere" / "bundle"))
    loaded = ModelBundle.load(Path(moved))
    assert loaded.encoders.image.weights_file() == Path(moved).resolve() / "encoders" / "image_weights.safetensors"
    assert loaded.encoders.text.adapter_path == Path(moved).resolve() / "encoders" / "text_adapter"
    assert ImageEncoder(loaded.encoders.image).fingerprint() == bundle.fingerprints["image"]
    assert TextEncoder(loaded.encoders.text).fingerprint() == bundle.fingerprints["note"]
    # the fingerprints really depend on the carried files: without them they differ
    untrained = loaded.encoders.image.model_copy(update={"train": None})
    assert ImageEncoder(untrained).fingerprint() != bundle.fingerprints["image"]
    assert (
        TextEncoder(loaded.encoders.text.model_copy(update={"adapter_path": None})).fingerprint()
        != bundle.fingerprints["note"]
    )


def test_a_loaded_bundle_saves_again_over_itself_and_elsewhere(tmp_path, workdir, kg) -> None:
    folder = _bundle(kg, _spec(workdir)).save(tmp_path / "a")
    files = _digest(folder / "encoders")
    again = ModelBundle.load(folder)
    again.save(folder)  # its sources are inside the folder it writes
    assert _digest(folder / "encoders") == files
    copy = ModelBundle.load(folder).save(tmp_path / "b")
    assert _digest(copy / "encoders") == files
    assert ImageEncoder(ModelBundle.load(copy).encoders.image).fingerprint() == again.fingerprints["image"]


def test_a_bundle_without_encoder_files_has_no_encoders_folder(tmp_path, kg) -> None:
    folder = _bundle(kg, EncodersSpec(image=ImageEncoderSpec(network="vit", vit=VIT, spatial_size=(8, 16, 16)))).save(
        tmp_path / "b"
    )
    assert not (folder / "encoders").exists() and not any(p.name.startswith(".") for p in folder.iterdir())
    assert ModelBundle.load(folder).encoders.text.adapter_path is None


def test_missing_trained_weights_at_save_name_the_command(tmp_path, workdir, kg) -> None:
    bundle = _bundle(kg, _spec(workdir))
    bundle.encoders = _spec(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="train-image"):
        bundle.save(tmp_path / "b")


def test_old_bundles_with_absolute_paths_load_as_before(tmp_path, workdir, kg, caplog) -> None:
    spec = _spec(workdir)
    folder = _bundle(kg, spec).save(tmp_path / "old")
    meta = json.loads((folder / "model.json").read_text())
    meta["encoders"] = spec.model_dump(mode="json")  # as bundles were saved before the files travelled
    (folder / "model.json").write_text(json.dumps(meta))
    shutil.rmtree(folder / "encoders")
    loaded = ModelBundle.load(folder)
    assert loaded.encoders == spec
    assert ImageEncoder(loaded.encoders.image).fingerprint() == loaded.fingerprints["image"]

    gone = _spec(tmp_path / "gone").model_dump(mode="json")
    (folder / "model.json").write_text(json.dumps(meta | {"encoders": gone}))
    with caplog.at_level(logging.WARNING, logger="clinicmm.tracking.bundle"):
        loaded = ModelBundle.load(folder)  # loads (a notes-only or genomics-only caller never needs the image file)
    assert loaded.encoders.text.adapter_path == tmp_path / "gone" / "finetune_text" / "adapter"
    assert "register the model again" in caplog.text


def test_a_bundle_missing_its_carried_file_is_damaged(tmp_path, workdir, kg) -> None:
    folder = _bundle(kg, _spec(workdir)).save(tmp_path / "b")
    (folder / "encoders" / "image_weights.safetensors").unlink()
    with pytest.raises(ModelError, match="incomplete or damaged"):
        ModelBundle.load(folder)


# the models-from-code file of models registered by 0.1.0, before the stage packages: it names the old module
LEGACY_MODEL_CODE = """import mlflow.models

from clinicmm.tracking.pyfunc import ClinicmmModel

mlflow.models.set_model(ClinicmmModel())
"""


@pytest.mark.filterwarnings("ignore:.*An input example was not provided")
@pytest.mark.parametrize("written_by", ["current", "0.1.0"])
def test_the_registered_model_loads_and_scores_after_the_workdir_is_gone(
    tmp_path, workdir, kg, monkeypatch, written_by
) -> None:
    """End to end through the MLflow registry: log, register, delete the workdir and the bundle, load by alias; a
    model registered by 0.1.0 (its code file imports the class from clinicmm.tracking.pyfunc) loads the same way."""
    import mlflow
    import mlflow.pyfunc

    from clinicmm.serve.pyfunc import signature
    from clinicmm.serve.register import MODEL_CODE

    code = MODEL_CODE
    if written_by == "0.1.0":
        code = tmp_path / "model_code.py"
        code.write_text(LEGACY_MODEL_CODE)

    work = tmp_path / "work"
    shutil.copytree(workdir, work)
    bundle = _bundle(kg, _spec(work))
    folder = bundle.save(tmp_path / "train" / "concat")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment_name="portable")
        with mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code),
                artifacts={"bundle": str(folder)},
                signature=signature(),
                registered_model_name="portable",
                pip_requirements=["clinicmm"],
            )
        mlflow.MlflowClient().set_registered_model_alias("portable", "champion", "1")
        shutil.rmtree(work)
        shutil.rmtree(tmp_path / "train")

        model = mlflow.pyfunc.load_model("models:/portable@champion")
        python_model = model.unwrap_python_model()
        assert python_model.featurizer.image_encoder.fingerprint() == bundle.fingerprints["image"]
        frame = pd.DataFrame(
            [{"patient_id": "p1", "notes": json.dumps(["FINAL DIAGNOSIS: invasive ductal carcinoma."])}]
        )
        out = model.predict(frame)  # _check_fingerprints compares the note encoder with the adapter it carries
    finally:
        mlflow.set_tracking_uri(previous)
    assert out["status"].tolist() == ["scored"], out["reason"].tolist()
    assert out["predicted"].iloc[0] in CLASSES


def test_files_clinicmm_wrote_are_shared_on_disk_and_a_retrain_leaves_the_bundle_as_it_was(tmp_path, kg) -> None:
    from clinicmm.files import atomic_write_bytes

    ours = tmp_path / "work" / "train_image" / "weights.safetensors"
    _image_weights(ours)
    trained = EncodersSpec(
        image=ImageEncoderSpec(
            network="vit", vit=VIT, spatial_size=(8, 16, 16), train=ImageTrainSpec(epochs=1, output=ours)
        )
    )
    kept = _bundle(kg, trained).save(tmp_path / "trained") / "encoders" / "image_weights.safetensors"
    assert kept.stat().st_ino == ours.stat().st_ino  # one copy on disk for every model's bundle
    before = kept.read_bytes()
    atomic_write_bytes(ours, b"retrained")  # train-image writes a new file through a rename
    assert kept.read_bytes() == before

    mine = tmp_path / "mine.safetensors"  # the user's own pretrained weights: copied, never linked
    _image_weights(mine)
    own = EncodersSpec(image=ImageEncoderSpec(network="vit", vit=VIT, spatial_size=(8, 16, 16), weights=mine))
    copied = _bundle(kg, own).save(tmp_path / "own") / "encoders" / "image_weights.safetensors"
    assert copied.stat().st_ino != mine.stat().st_ino and copied.read_bytes() == mine.read_bytes()
