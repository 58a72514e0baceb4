"""Where the graph models' knowledge nodes start: cancer types from the text embedding of each type's name and
definition (few-shot types), genes, pathways and concepts from the graph's structural embedding (``node_init``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinicmm.config import TextEncoderSpec, TrainingSpec
from clinicmm.fusion.batch import PatientEvidence, build_batch, schema
from clinicmm.fusion.models.concat import ConcatFusion
from clinicmm.fusion.models.kg_gnn import (
    CONTEXT_STD,
    KGGNNFusion,
    _project,
    class_texts,
    init_classes_from_text,
    init_nodes_from_graph,
)
from clinicmm.fusion.models.kg_rgcn import KGRGCNFusion
from clinicmm.keys import Node
from clinicmm.knowledge.embedding import structural_embedding
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


@pytest.mark.parametrize("cls", [KGGNNFusion, KGRGCNFusion])
def test_graph_init_starts_genes_of_one_pathway_close_and_changes_the_logits(kg, cls):
    model, hetero = graph_model(cls, kg)
    genes = [
        kg.index(Node.GENE, g) for g, p, _ in kg.edges("gene", "member_of", "pathway") if p == kg.names("pathway")[0]
    ]
    batch = build_batch(hetero, [PatientEvidence(-1, None, None, np.ones(10, np.float32), [], [], genes[:3])], DIMS)
    before, classes = model(batch), model.embeddings["cancer_type"].weight.clone()
    random_cos = torch.nn.functional.cosine_similarity(*model.embeddings["gene"].weight[genes[:2]], dim=0)
    assert init_nodes_from_graph(model, kg, "graph")
    weight = model.embeddings["gene"].weight.detach()
    vectors = torch.from_numpy(structural_embedding(kg, 16)["gene"])
    assert torch.allclose(weight.pow(2).mean(1).sqrt(), torch.full((len(weight),), CONTEXT_STD), atol=1e-6)
    assert torch.allclose(torch.nn.functional.normalize(weight, dim=1), torch.nn.functional.normalize(vectors, dim=1),
                          atol=1e-5)  # fmt: skip
    graph_cos = torch.nn.functional.cosine_similarity(*weight[genes[:2]], dim=0)
    assert graph_cos > 0.5 > abs(random_cos)  # two members of one pathway: unrelated at random, close from the graph
    assert torch.equal(model.embeddings["cancer_type"].weight, classes)  # the class prototypes are class_init's
    assert not torch.allclose(model(batch), before)


def test_graph_init_keeps_the_random_start_of_nodes_without_sets_and_checks_shapes(kg):
    model, _ = graph_model(KGGNNFusion, kg)
    weight = model.embeddings["gene"].weight
    start = weight.detach().clone()
    vectors = torch.zeros_like(start)
    vectors[:5] = torch.randn(5, start.size(1))
    assert model.init_node_embeddings("gene", vectors) == 5
    assert torch.equal(weight[5:], start[5:]) and not torch.equal(weight[:5], start[:5])
    for bad in (vectors[:, :3], vectors[:-1], vectors.fill_(float("nan"))):
        with pytest.raises(ValueError, match="gene vectors of shape"):
            model.init_node_embeddings("gene", bad)


def test_random_node_init_and_models_without_knowledge_nodes_are_left_alone(kg):
    assert TrainingSpec().node_init == "random"
    model, _ = graph_model(KGGNNFusion, kg)
    weight = model.embeddings["gene"].weight.clone()
    assert not init_nodes_from_graph(model, kg, "random")
    assert torch.equal(model.embeddings["gene"].weight, weight)
    assert not init_nodes_from_graph(ConcatFusion(DIMS, 3, hidden=16), kg, "graph")
