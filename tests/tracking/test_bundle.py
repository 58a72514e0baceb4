"""ModelBundle: save/load round trip, safetensors weights, graph integrity check, clear errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from clinicmm.config import EncodersSpec, TextEncoderSpec
from clinicmm.errors import ModelError
from clinicmm.fusion.batch import PatientEvidence
from clinicmm.keys import Node
from clinicmm.knowledge.graph import KnowledgeGraph
from clinicmm.tracking.bundle import ModelBundle
from clinicmm.training.data import Standardizer
from clinicmm.training.fit import predict_proba

DIMS = {"image": 8, "note": 8, "omics": 8}
CLASSES = ["LUAD", "BRCA", "COAD"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return KnowledgeGraph.default()


def make_bundle(name: str, kg: KnowledgeGraph, **extra) -> ModelBundle:
    scaler = Standardizer({m: [0.5] * 8 for m in DIMS}, {m: [2.0] * 8 for m in DIMS})
    bundle = ModelBundle(
        name,
        CLASSES,
        dict(DIMS),
        16,
        0.1,
        EncodersSpec(text=TextEncoderSpec(max_length=128)),
        {"image": "img-fp", "text": "txt-fp"},
        scaler,
        {},
        kg,
        **extra,
    )
    torch.manual_seed(0)
    model = bundle.build_model(load_weights=False)
    bundle.state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return bundle


def items(kg: KnowledgeGraph) -> list[PatientEvidence]:
    rng = np.random.default_rng(0)
    genes = [kg.index(Node.GENE, g) for g in ("TP53", "KRAS", "EGFR")]
    concepts = [kg.index(Node.CONCEPT, "bodypart:chest"), kg.index(Node.CONCEPT, "site:lung")]
    vec = lambda: rng.normal(size=8).astype(np.float32)  # noqa: E731
    return [
        PatientEvidence(
            image=vec(), note=vec(), omics=vec(), image_concepts=concepts[:1], note_concepts=concepts, omics_genes=genes
        ),
        PatientEvidence(note=vec(), note_concepts=concepts[1:]),
        PatientEvidence(omics=vec(), omics_genes=genes[:1]),
        PatientEvidence(image=vec(), image_concepts=concepts[:1], omics=vec()),
    ]


def predict(bundle: ModelBundle, kg_items: list[PatientEvidence]) -> np.ndarray:
    return predict_proba(bundle.build_model(), kg_items, bundle.knowledge.to_hetero(), bundle.dims)


@pytest.mark.parametrize("name", ["concat", "kg_gnn"])
def test_round_trip_gives_identical_predictions(tmp_path, kg, name):
    bundle = make_bundle(name, kg, genomics={"genes": ["TP53"], "mean": [1.0]}, extra={"best_epoch": 3})
    folder = bundle.save(tmp_path / "bundle")
    loaded = ModelBundle.load(folder)
    batch = items(kg)
    before, after = predict(bundle, batch), predict(loaded, batch)
    assert before.shape == (len(batch), len(CLASSES))
    np.testing.assert_array_equal(before, after)
    assert (loaded.name, loaded.classes, loaded.dims, loaded.hidden, loaded.dropout) == (name, CLASSES, DIMS, 16, 0.1)
    assert loaded.encoders == bundle.encoders and loaded.fingerprints == bundle.fingerprints
    assert loaded.scaler == bundle.scaler
    assert loaded.genomics == bundle.genomics and loaded.extra == {"best_epoch": 3}
    assert loaded.knowledge.fingerprint() == kg.fingerprint()
    assert torch.equal(loaded.class_nodes(), bundle.class_nodes())
    assert set(loaded.state_dict) == set(bundle.state_dict)


@pytest.mark.parametrize("offset", ["none", "logreg"])
def test_an_ensemble_round_trips_and_a_model_built_from_it_saves_again(tmp_path, kg, offset):
    bundle = make_bundle("kg_gnn", kg, ensemble=3, offset=offset)
    loaded = ModelBundle.load(bundle.save(tmp_path / "b"))
    assert (loaded.ensemble, loaded.offset) == (3, offset)
    np.testing.assert_array_equal(predict(bundle, items(kg)), predict(loaded, items(kg)))
    # the model's own state dict, uncopied (as `benchmarks/serve.py` and a re-save take it): its members hold no
    # tensor in common, which safetensors would refuse
    loaded.state_dict = dict(loaded.build_model().state_dict())
    again = ModelBundle.load(loaded.save(tmp_path / "c"))
    np.testing.assert_array_equal(predict(loaded, items(kg)), predict(again, items(kg)))


def test_bundle_without_genomics_has_no_genomics_file(tmp_path, kg):
    folder = make_bundle("concat", kg).save(tmp_path / "b")
    assert not (folder / "genomics.json").exists()
    loaded = ModelBundle.load(folder)
    assert loaded.genomics is None and loaded.preprocessor() is None


def test_weights_are_safetensors_not_pickle(tmp_path, kg):
    from safetensors import safe_open

    bundle = make_bundle("concat", kg)
    folder = bundle.save(tmp_path / "b")
    data = (folder / "weights.safetensors").read_bytes()
    assert not data.startswith(b"\x80") and not data.startswith(b"PK")  # neither a pickle nor torch.save's zip
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    assert set(header) - {"__metadata__"} == set(bundle.state_dict)
    with safe_open(str(folder / "weights.safetensors"), framework="pt") as f:
        for key in bundle.state_dict:
            assert torch.equal(f.get_tensor(key), bundle.state_dict[key])
    meta = json.loads((folder / "model.json").read_text())
    assert meta["knowledge_fingerprint"] == kg.fingerprint() and meta["classes"] == CLASSES


def test_edited_graph_refuses_to_load(tmp_path, kg):
    folder = make_bundle("concat", kg).save(tmp_path / "b")
    drivers = {(g, c) for g, c, _ in kg.edges(Node.GENE, "driver_of", Node.CANCER)}
    gene = next(g for g in kg.names(Node.GENE) if (g, "BRCA") not in drivers)
    with open(folder / "graph" / "edges.tsv", "a", encoding="utf-8") as f:
        f.write(f"gene\t{gene}\tdriver_of\tcancer_type\tBRCA\tedited by hand\n")
    with pytest.raises(ModelError) as err:
        ModelBundle.load(folder)
    assert str(folder / "graph") in str(err.value)


def test_folder_without_model_json(tmp_path):
    with pytest.raises(ModelError) as err:
        ModelBundle.load(tmp_path)
    assert str(tmp_path) in str(err.value) and "model.json" in str(err.value)


def test_weights_of_another_model_do_not_load(tmp_path, kg):
    bundle = make_bundle("concat", kg)
    bundle.name = "kg_gnn"
    loaded = ModelBundle.load(bundle.save(tmp_path / "b"))
    with pytest.raises(ModelError, match="kg_gnn"):
        loaded.build_model()


@pytest.mark.parametrize("damage", ["no graph", "corrupt weights"])
def test_damaged_bundle_is_a_model_error_naming_the_folder(tmp_path, kg, damage):
    import shutil

    folder = make_bundle("concat", kg).save(tmp_path / "b")
    if damage == "no graph":
        shutil.rmtree(folder / "graph")
    else:
        (folder / "weights.safetensors").write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(ModelError, match="incomplete or damaged") as err:
        ModelBundle.load(folder)
    assert str(folder) in str(err.value)
