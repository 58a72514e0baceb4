"""Fusion models: logits shape, gradients, batch independence, learning a tiny problem, graph-only learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import HeteroData

from clinicmm.errors import ModelError
from clinicmm.fusion.batch import PatientEvidence, build_batch, schema
from clinicmm.fusion.models.concat import ConcatFusion
from clinicmm.fusion.models.kg_gnn import KGGNNFusion
from clinicmm.fusion.models.single import SingleModalityModel
from clinicmm.fusion.registry import MODELS, build_model

DIMS = {"image": 8, "note": 6, "omics": 10}
N_CLASSES = 4
CLASS_NODES = torch.tensor([2, 0, 3, 1])  # class k is scored against cancer_type node CLASS_NODES[k]
NUM_NODES = {"gene": 16, "pathway": 3, "cancer_type": 4, "concept": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def knowledge(shared_concept: bool = False) -> HeteroData:
    """Genes 3k..3k+2 drive class k, genes 12-15 drive nothing; concepts 2k, 2k+1 indicate class k.

    ``shared_concept``: concept 0 also indicates class 1, so some concept gets messages from two cancer types (an
    attention softmax over a single edge gives its relation weight no gradient).
    """
    g = HeteroData()
    for t, n in NUM_NODES.items():
        g[t].num_nodes = n
        g[t].node_id = torch.arange(n)
    rels = {
        ("gene", "member_of", "pathway"): [list(range(16)), [i % 3 for i in range(16)]],
        ("gene", "driver_of", "cancer_type"): [list(range(12)), [int(CLASS_NODES[i // 3]) for i in range(12)]],
        ("concept", "indicates", "cancer_type"): [list(range(8)), [int(CLASS_NODES[i // 2]) for i in range(8)]],
    }
    if shared_concept:
        rels["concept", "indicates", "cancer_type"][0].append(0)
        rels["concept", "indicates", "cancer_type"][1].append(int(CLASS_NODES[1]))
    for (src, rel, dst), ei in rels.items():
        g[src, rel, dst].edge_index = torch.tensor(ei)
        g[dst, "rev_" + rel, src].edge_index = torch.tensor(ei).flip(0)
    return g


def problem(encode: dict[str, str], n: int = 60, graph: bool = False, seed: int = 0) -> list[PatientEvidence]:
    """Patients of class i % 4; each modality's embedding encodes 'full' class, 'bit0', 'bit1', or 'none'/'zero'.

    With ``graph``, omics genes and note concepts are drawn from the class's driver genes / indicating concepts.
    """
    rng = np.random.default_rng(seed)
    protos = {m: rng.normal(size=(4, d)) for m, d in DIMS.items()}
    out = []
    for i in range(n):
        label, vectors = i % 4, {}
        for m, d in DIMS.items():
            key = {"full": label, "bit0": label % 2, "bit1": label // 2}.get(encode.get(m, "none"))
            noise = rng.normal(size=d) * 0.3
            vectors[m] = np.zeros(d) if encode.get(m) == "zero" else noise + (0 if key is None else protos[m][key])
        genes = list(rng.choice(3, 2, replace=False) + 3 * label) if graph else list(rng.choice(16, 2, replace=False))
        concepts = [2 * label + int(rng.integers(2))] if graph else [int(rng.integers(8))]
        out.append(
            PatientEvidence(
                label,
                vectors["image"],
                vectors["note"],
                vectors["omics"],
                [int(rng.integers(8))],
                concepts,
                genes + [12 + int(rng.integers(4))],
            )
        )
    return out


def make(name: str, hidden: int = 16, dropout: float = 0.1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, DIMS, N_CLASSES, knowledge(), CLASS_NODES, hidden, dropout)


def train_accuracy(model: nn.Module, batch: HeteroData, steps: int = 300, lr: float = 1e-2) -> float:
    """Full-batch Adam; stops early once the training loss is small. Returns train accuracy in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    y = batch["patient"].y
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(batch), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.05:
            break
    model.eval()
    with torch.no_grad():
        return (model(batch).argmax(1) == y).float().mean().item()


def mixed_batch() -> HeteroData:
    """8 patients; every modality missing for someone, every edge type non-empty."""
    ps = problem({"image": "full", "note": "full", "omics": "full"}, n=8, graph=True)
    ps[1].image, ps[2].note, ps[3].omics, ps[4].image, ps[4].note = None, None, None, None, None
    return build_batch(knowledge(shared_concept=True), ps, DIMS)


@pytest.mark.parametrize("name", list(MODELS))
def test_models_give_logits_and_modality_weights(name: str) -> None:
    batch = mixed_batch()
    model = make(name).eval()
    logits = model(batch)
    assert logits.shape == (8, N_CLASSES) and torch.isfinite(logits).all()
    weights = model.modality_weights(batch)
    present = batch["patient"].present
    assert weights.shape == (8, 3) and (weights >= 0).all()
    assert (weights[~present] == 0).all()  # no share for a modality the patient lacks
    if name in ("concat", "kg_gnn"):
        assert torch.allclose(weights.sum(1), torch.ones(8))


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ModelError, match="valid names: image, note, omics, concat, kg_gnn"):
        build_model("transformer", DIMS, N_CLASSES, knowledge(), CLASS_NODES, 16, 0.1)


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_reach_every_parameter(name: str) -> None:
    batch = mixed_batch()
    model = make(name, dropout=0.0).train()
    if not list(model.parameters()):  # boosted trees: fitted by scikit-learn, nothing for gradients to reach
        assert getattr(model, "closed_form", False) == "trees"
        return
    nn.functional.cross_entropy(model(batch), batch["patient"].y).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_do_not_depend_on_the_rest_of_the_batch(name: str) -> None:
    ps = problem({"image": "full", "note": "bit0", "omics": "bit1"}, n=16, graph=True, seed=3)
    ps[5].note, ps[6].omics, ps[9].image = None, None, None
    model = make(name).eval()
    g = knowledge()
    with torch.no_grad():
        whole = model(build_batch(g, ps, DIMS))
        order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
        shuffled = model(build_batch(g, [ps[i] for i in order], DIMS))
        alone = torch.cat([model(build_batch(g, ps[i : i + 3], DIMS)) for i in range(0, 16, 3)])
    assert torch.allclose(shuffled, whole[order], atol=1e-5)
    assert torch.allclose(alone, whole, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_state_dict_round_trip_restores_predictions(name: str) -> None:
    batch = mixed_batch()
    trained, fresh = make(name, seed=0).eval(), make(name, seed=1).eval()
    if name == "gbt":  # its trees come from a fit, not from the seed: fit some
        from sklearn.ensemble import GradientBoostingClassifier

        from clinicmm.training.trees import copy_into

        x = trained.features(batch).double().numpy()
        clf = GradientBoostingClassifier(n_estimators=5, init="zero", random_state=0)
        copy_into(trained, clf.fit(x, batch["patient"].y.numpy()), N_CLASSES)
    with torch.no_grad():
        assert not torch.allclose(trained(batch), fresh(batch))
        fresh.load_state_dict(trained.state_dict())
        assert torch.allclose(trained(batch), fresh(batch))


@pytest.mark.parametrize("name", ["concat", "kg_gnn"])
def test_fusion_models_combine_modalities(name: str) -> None:
    # image tells class % 2, note tells class // 2, omics is noise: only fusion solves it
    batch = build_batch(knowledge(), problem({"image": "bit0", "note": "bit1"}), DIMS)
    assert train_accuracy(make(name), batch) > 0.9


@pytest.mark.parametrize("modality", ["image", "note", "omics"])
def test_single_modality_models_learn_their_modality(modality: str) -> None:
    batch = build_batch(knowledge(), problem({modality: "full"}), DIMS)
    assert train_accuracy(make(modality), batch) > 0.9


def test_kg_model_learns_from_graph_evidence_alone() -> None:
    # every embedding is zero: the class is only in which genes/concepts the evidence links to
    zero = {m: "zero" for m in DIMS}
    batch = build_batch(knowledge(), problem(zero, graph=True), DIMS)
    assert batch["patient"].x_note.abs().sum() == 0
    assert train_accuracy(make("kg_gnn", hidden=32), batch) > 0.9
    assert train_accuracy(make("concat"), batch, steps=100) < 0.5  # sees identical inputs for everyone


def test_kg_model_single_modality_shares_follow_the_informative_modality() -> None:
    batch = build_batch(knowledge(), problem({"image": "full"}, n=40), DIMS)
    model = make("kg_gnn")
    assert train_accuracy(model, batch) > 0.9
    weights = model.modality_weights(batch)
    assert weights[:, 0].mean() > 0.6 and model.training is False


def test_init_class_embeddings_sets_projected_rows() -> None:
    model = make("kg_gnn", hidden=16)
    weight = model.embeddings["cancer_type"].weight
    before = weight.detach().clone()
    vectors = torch.randn(2, 384)
    model.init_class_embeddings(torch.cat([vectors, vectors[:1]]), rows=torch.tensor([3, 1, 0]))
    assert torch.equal(weight[2], before[2])
    assert torch.allclose(weight[3], weight[0]) and not torch.allclose(weight[3], weight[1])
    assert torch.allclose(weight[[0, 1, 3]].pow(2).mean(1), torch.ones(3))
    same = torch.randn(4, 16)
    model.init_class_embeddings(same)
    assert torch.allclose(weight, same / same.pow(2).mean(1, keepdim=True).sqrt())
    with pytest.raises(ValueError, match="Expected finite vectors of shape"):
        model.init_class_embeddings(torch.randn(3, 16))
    with pytest.raises(ValueError, match="distinct rows"):
        model.init_class_embeddings(torch.randn(2, 16), rows=torch.tensor([1, 1]))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: SingleModalityModel("xray", DIMS, 4), "modality"),
        (lambda: SingleModalityModel("note", DIMS, 1), "n_classes"),
        (lambda: ConcatFusion(DIMS, 4, hidden=0), "hidden"),
        (lambda: ConcatFusion(DIMS, 4, dropout=1.0), "dropout"),
        (lambda: ConcatFusion({"image": 8}, 4), "dims"),
        (lambda: KGGNNFusion(DIMS, 4, NUM_NODES, CLASS_NODES, schema(), hidden=15, heads=2), "divisible"),
        (lambda: KGGNNFusion(DIMS, 4, NUM_NODES, torch.tensor([0, 1, 1, 2]), schema()), "distinct"),
        (lambda: KGGNNFusion(DIMS, 4, NUM_NODES, torch.tensor([0, 1, 2]), schema()), "length n_classes=4"),
        (lambda: KGGNNFusion(DIMS, 4, {**NUM_NODES, "gene": 0}, CLASS_NODES, schema()), "num_nodes"),
        (lambda: KGGNNFusion(DIMS, 4, NUM_NODES, CLASS_NODES, (["gene"], [])), "metadata"),
        (lambda: KGGNNFusion(DIMS, 4, NUM_NODES, CLASS_NODES, schema(), layers=0), "layers"),
    ],
)
def test_bad_constructor_arguments_raise(build, match: str) -> None:
    with pytest.raises(ValueError, match=f"Expected.*{match}"):
        build()
