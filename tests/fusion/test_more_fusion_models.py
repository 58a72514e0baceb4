"""Attention fusion and R-GCN knowledge-graph fusion: shapes, gradients, batch independence, missing modalities,
learning the tiny problems of test_fusion_models.py (whose data builders are imported, not copied)."""

from __future__ import annotations

import pytest
import torch
from test_fusion_models import (
    CLASS_NODES,
    DIMS,
    N_CLASSES,
    NUM_NODES,
    knowledge,
    make,
    mixed_batch,
    problem,
    train_accuracy,
)
from torch import nn

from clinicmm.errors import ModelError
from clinicmm.fusion.batch import PatientEvidence, build_batch, schema, without_modality
from clinicmm.fusion.models.attention import AttentionFusion
from clinicmm.fusion.models.kg_gnn import EVIDENCE_TYPES, KNOWLEDGE_TYPES
from clinicmm.fusion.models.kg_rgcn import KGRGCNFusion
from clinicmm.fusion.registry import MODELS, build_model

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ["attention", "kg_rgcn"]


def test_registry_builds_both_models_from_the_shared_signature() -> None:
    assert isinstance(make("attention"), AttentionFusion) and isinstance(make("kg_rgcn"), KGRGCNFusion)
    assert set(NAMES) <= set(MODELS)


def test_the_registry_builds_exactly_the_model_names_the_config_allows() -> None:
    from clinicmm.config import MODEL_NAMES

    assert sorted(MODELS) == sorted(MODEL_NAMES)  # one list (clinicmm.keys.Model): no name without a factory
    with pytest.raises(ModelError, match="valid names: .*attention, kg_rgcn"):
        build_model("gat", DIMS, N_CLASSES, knowledge(), CLASS_NODES, 16, 0.1)


@pytest.mark.parametrize("name", NAMES)
def test_logits_shape_and_gradients_reach_every_parameter(name: str) -> None:
    batch = mixed_batch()
    model = make(name, dropout=0.0).train()
    logits = model(batch)
    assert logits.shape == (8, N_CLASSES) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, batch["patient"].y).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


@pytest.mark.parametrize("name", NAMES)
def test_logits_do_not_depend_on_batch_mates(name: str) -> None:
    ps = problem({"image": "full", "note": "bit0", "omics": "bit1"}, n=12, graph=True, seed=4)
    ps[2].note, ps[5].omics, ps[7].image, ps[7].note = None, None, None, None
    model, g = make(name).eval(), knowledge(shared_concept=True)
    with torch.no_grad():
        whole = model(build_batch(g, ps, DIMS))
        order = torch.randperm(12, generator=torch.Generator().manual_seed(1))
        shuffled = model(build_batch(g, [ps[i] for i in order], DIMS))
        alone = torch.cat([model(build_batch(g, [p], DIMS)) for p in ps])
    assert torch.allclose(shuffled, whole[order], atol=1e-5)
    assert torch.allclose(alone, whole, atol=1e-5)
    assert not torch.allclose(whole[0], whole[1])  # patients are not all scored alike


@pytest.mark.parametrize("name", NAMES)
def test_missing_modalities_get_zero_weight_and_no_nan(name: str) -> None:
    batch = mixed_batch()
    model = make(name).train()
    weights = model.modality_weights(batch)
    present = batch["patient"].present
    assert weights.shape == (8, 3) and (weights >= 0).all() and (weights[~present] == 0).all()
    assert torch.allclose(weights.sum(1), torch.ones(8)) and model.training  # training mode restored
    no_image = without_modality(batch, "image")
    assert torch.isfinite(model(no_image)).all() and (model.modality_weights(no_image)[:, 0] == 0).all()


def test_attention_patient_without_any_modality_is_finite_with_zero_weights() -> None:
    ps = problem({"image": "full"}, n=4)
    ps[1] = PatientEvidence(label=1)
    batch = build_batch(knowledge(), ps, DIMS)
    model = make("attention", dropout=0.0)
    logits = model(batch)
    nn.functional.cross_entropy(logits, batch["patient"].y).backward()
    assert torch.isfinite(logits).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())
    weights = model.modality_weights(batch)
    assert (weights[1] == 0).all() and torch.allclose(weights[[0, 2, 3]].sum(1), torch.ones(3))


def test_attention_weights_change_with_the_patients_evidence() -> None:
    batch = build_batch(knowledge(), problem({"image": "full", "note": "full", "omics": "full"}, n=8), DIMS)
    weights = make("attention").modality_weights(batch)
    assert not torch.allclose(weights[0], weights[1])  # per-patient weights, not a global modality prior


@pytest.mark.parametrize("name", NAMES)
def test_models_combine_modalities(name: str) -> None:
    # image tells class % 2, note tells class // 2, omics is noise: only fusion solves it
    batch = build_batch(knowledge(), problem({"image": "bit0", "note": "bit1"}), DIMS)
    assert train_accuracy(make(name), batch) > 0.9


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("modality", "column"), [("image", 0), ("omics", 2)])
def test_weights_follow_the_informative_modality(name: str, modality: str, column: int) -> None:
    batch = build_batch(knowledge(), problem({modality: "full"}, n=40), DIMS)
    model = make(name)
    assert train_accuracy(model, batch) > 0.9
    assert model.modality_weights(batch)[:, column].mean() > 0.6


def test_kg_rgcn_learns_from_graph_evidence_alone() -> None:
    # every embedding is zero: the class is only in which genes/concepts the evidence links to
    batch = build_batch(knowledge(), problem({m: "zero" for m in DIMS}, graph=True), DIMS)
    assert batch["patient"].x_omics.abs().sum() == 0 and batch["patient"].x_note.abs().sum() == 0
    assert train_accuracy(make("kg_rgcn", hidden=32), batch) > 0.9
    assert train_accuracy(make("concat"), batch, steps=100) < 0.5  # sees identical inputs for everyone
    assert train_accuracy(make("attention"), batch, steps=100) < 0.5


def test_kg_rgcn_passes_no_evidence_to_knowledge_messages_and_prunes_unread_types() -> None:
    model = make("kg_rgcn")
    first, last = (list(conv.convs.keys()) for conv in model.convs)
    assert not [et for et in first + last if et[0] in EVIDENCE_TYPES and et[2] in KNOWLEDGE_TYPES]
    assert ("gene", "rev_altered", "omics") in first and ("patient", "rev_of", "omics") in first
    assert {et[2] for et in last} == {"patient", "cancer_type"}  # the last layer skips genes, concepts, evidence


def test_kg_rgcn_knowledge_states_ignore_patients() -> None:
    # changing one patient's omics and genes leaves every other patient's logits untouched
    ps = problem({"omics": "full"}, n=6, graph=True)
    model, g = make("kg_rgcn").eval(), knowledge()
    with torch.no_grad():
        before = model(build_batch(g, ps, DIMS))
        ps[0].omics, ps[0].omics_genes = ps[0].omics * 5, list(range(16))
        after = model(build_batch(g, ps, DIMS))
    assert torch.allclose(before[1:], after[1:], atol=1e-6) and not torch.allclose(before[0], after[0])


def test_kg_rgcn_init_class_embeddings_is_kg_gnns() -> None:
    model = make("kg_rgcn", hidden=16)
    same = torch.randn(4, 16)
    model.init_class_embeddings(same)
    assert torch.allclose(model.embeddings["cancer_type"].weight, same / same.pow(2).mean(1, keepdim=True).sqrt())


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: AttentionFusion(DIMS, 1), "n_classes"),
        (lambda: AttentionFusion({"image": 8}, 4), "dims"),
        (lambda: AttentionFusion(DIMS, 4, dropout=-0.1), "dropout"),
        (lambda: KGRGCNFusion(DIMS, 4, NUM_NODES, torch.tensor([0, 1, 1, 2]), schema()), "distinct"),
        (lambda: KGRGCNFusion(DIMS, 4, {**NUM_NODES, "concept": 0}, CLASS_NODES, schema()), "num_nodes"),
        (lambda: KGRGCNFusion(DIMS, 4, NUM_NODES, CLASS_NODES, (["gene"], [])), "metadata"),
        (lambda: KGRGCNFusion(DIMS, 4, NUM_NODES, CLASS_NODES, schema(), layers=0), "layers"),
        (lambda: KGRGCNFusion(DIMS, 4, NUM_NODES, CLASS_NODES, schema(), hidden=0), "hidden"),
    ],
)
def test_bad_constructor_arguments_raise(build, match: str) -> None:
    with pytest.raises(ValueError, match=f"Expected.*{match}"):
        build()


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_pickles_and_predicts_the_same_after(name: str) -> None:
    """``ddp_spawn`` hands the model to its processes by pickle: nothing in a model may be unpicklable."""
    import pickle

    model = make(name).eval()
    batch = mixed_batch()
    copy = pickle.loads(pickle.dumps(model)).eval()
    with torch.no_grad():
        assert torch.allclose(model(batch), copy(batch))
