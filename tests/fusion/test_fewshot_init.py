"""Cancer-type nodes start from the text embedding of each type's name and definition (few-shot types)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinicmm.config import TextEncoderSpec, TrainingSpec
from clinicmm.fusion.batch import PatientEvidence, build_batch, schema
from clinicmm.fusion.models.concat import ConcatFusion
from clinicmm.fusion.models.kg_gnn import KGGNNFusion, _project, class_texts, init_classes_from_text
from clinicmm.fusion.models.kg_rgcn import KGRGCNFusion
from clinicmm.keys import Node
from clinicmm.knowledge.graph import KnowledgeGraph

DIMS = {"image": 8, "note": 6, "omics": 10}

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder:
    """A stand-in text encoder: a fixed random vector per text, and the texts it was asked for."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode(self, texts, progress=True):
        self.texts += texts
        return np.stack([np.random.default_rng(len(t)).normal(size=12) for t in texts]).astype(np.float32)


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return KnowledgeGraph.default()


def graph_model(cls, kg):
    torch.manual_seed(0)
    hetero = kg.to_hetero()
    nodes = torch.tensor([kg.index(Node.CANCER, c) for c in ("LUAD", "LUSC", "THCA")])
    num = {t: int(hetero[t].num_nodes) for t in ("gene", "pathway", "cancer_type", "concept")}
    return cls(DIMS, 3, num, nodes, schema(DIMS), hidden=16).eval(), hetero


def test_class_texts_are_name_and_definition(kg):
    texts = class_texts(kg)
    assert len(texts) == kg.num_nodes(Node.CANCER)
    luad = texts[kg.index(Node.CANCER, "LUAD")]
    assert luad.startswith("Lung Adenocarcinoma. ") and luad.endswith(kg.definition(Node.CANCER, "LUAD"))


@pytest.mark.parametrize("cls", [KGGNNFusion, KGRGCNFusion])
def test_text_init_sets_the_class_nodes_and_changes_the_logits(kg, cls):
    model, hetero = graph_model(cls, kg)
    batch = build_batch(hetero, [PatientEvidence(-1, None, np.ones(6, np.float32), None, [], [0, 1], [])], DIMS)
    with torch.no_grad():
        before = model(batch)
    encoder = Recorder()
    assert init_classes_from_text(model, kg, TrainingSpec().class_init, encoder=encoder)
    assert encoder.texts == class_texts(kg)
    vectors = torch.from_numpy(encoder.encode(class_texts(kg)))
    expected = _project(vectors - vectors.mean(0, keepdim=True), 16)
    assert torch.allclose(model.embeddings["cancer_type"].weight, expected)
    with torch.no_grad():
        assert not torch.allclose(model(batch), before)


def test_random_init_and_models_without_class_nodes_are_left_alone(kg):
    model, _ = graph_model(KGGNNFusion, kg)
    weight = model.embeddings["cancer_type"].weight.clone()
    assert not init_classes_from_text(model, kg, "random", encoder=Recorder())
    assert torch.equal(model.embeddings["cancer_type"].weight, weight)
    assert not init_classes_from_text(ConcatFusion(DIMS, 3, hidden=16), kg, "text", encoder=Recorder())


def test_shipped_text_model_places_related_types_closer(kg):
    model, _ = graph_model(KGGNNFusion, kg)
    assert init_classes_from_text(model, kg, "text", TextEncoderSpec())
    emb = torch.nn.functional.normalize(model.embeddings["cancer_type"].weight.detach(), dim=1)
    sim = emb @ emb.T

    def at(a, b):
        return float(sim[kg.index(Node.CANCER, a), kg.index(Node.CANCER, b)])

    assert at("LUAD", "LUSC") > at("LUAD", "THCA")  # two lung carcinomas
    assert at("KIRP", "KIRC") > at("KIRP", "HNSC")  # two renal cell carcinomas
