"""Receptive-field batches: the cut batch gives the full graph's logits and holds only what the batch can reach."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import PatientEvidence, build_batch, schema
from clinicmm.fusion.models.kg_gnn import KGGNNFusion
from clinicmm.fusion.models.kg_rgcn import KGRGCNFusion
from clinicmm.fusion.subgraph import knowledge_edges, receptive_field, restrict

DIMS = {"image": 8, "note": 6, "omics": 10}
NUM_NODES = {"gene": 300, "pathway": 40, "cancer_type": 7, "concept": 30}
CLASS_NODES = torch.tensor([5, 1, 3])  # not the first cancer-type nodes, not in order

pytestmark = pytest.mark.usefixtures("one_thread")


def random_knowledge(seed: int = 0) -> HeteroData:
    rng = np.random.default_rng(seed)
    g = HeteroData()
    for t, n in NUM_NODES.items():
        g[t].num_nodes = n
        g[t].node_id = torch.arange(n)
    sizes = {
        ("gene", "member_of", "pathway"): 900,
        ("gene", "driver_of", "cancer_type"): 40,
        ("concept", "indicates", "cancer_type"): 25,
    }
    for (src, rel, dst), n in sizes.items():
        pairs = {(int(rng.integers(NUM_NODES[src])), int(rng.integers(NUM_NODES[dst]))) for _ in range(n)}
        ei = torch.tensor(sorted(pairs)).t()
        g[src, rel, dst].edge_index = ei
        g[dst, "rev_" + rel, src].edge_index = ei.flip(0)
    return g


def patients(n: int, seed: int = 1) -> list[PatientEvidence]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        vec = {m: rng.normal(size=d).astype(np.float32) for m, d in DIMS.items()}
        if i % 4 == 1:
            vec["image"] = None
        out.append(
            PatientEvidence(
                i % 3,
                vec["image"],
                vec["note"],
                vec["omics"],
                [int(rng.integers(30))],
                list(rng.choice(30, 2, replace=False)),
                list(rng.choice(250, 5, replace=False)),
            )
        )  # genes 250-299: never linked
    return out


def cut_case(layers: int, n: int):
    """The random graph, an HGT model of ``layers`` layers (seeded) and a batch of ``n`` patients: what the cut
    tests walk. Returns ``(knowledge, model, patients, batch)``."""
    torch.manual_seed(0)
    knowledge = random_knowledge()
    model = KGGNNFusion(DIMS, 3, NUM_NODES, CLASS_NODES, schema(DIMS), hidden=16, layers=layers)
    items = patients(n)
    return knowledge, model, items, build_batch(knowledge, items, DIMS)


@pytest.mark.parametrize(("cls", "layers"), [(KGGNNFusion, 2), (KGGNNFusion, 3), (KGRGCNFusion, 2)])
def test_subgraph_logits_equal_full_graph_logits(cls, layers):
    torch.manual_seed(0)
    knowledge = random_knowledge()
    model = cls(DIMS, 3, NUM_NODES, CLASS_NODES, schema(DIMS), hidden=16, layers=layers).eval()
    batch = build_batch(knowledge, patients(12), DIMS)
    model.subgraph_min_edges = None
    full = model(batch)
    model.subgraph_min_edges = 1
    cut = model(batch)
    assert torch.allclose(cut, full, atol=1e-5, rtol=1e-4), (cut - full).abs().max()
    # and the same gradient reaches the parameters
    model.subgraph_min_edges = None
    full_grad = torch.autograd.grad(model(batch).logsumexp(1).sum(), model.readout.weight)[0]
    model.subgraph_min_edges = 1
    cut_grad = torch.autograd.grad(model(batch).logsumexp(1).sum(), model.readout.weight)[0]
    assert torch.allclose(cut_grad, full_grad, atol=1e-5, rtol=1e-4)


def test_subgraph_holds_only_the_receptive_field():
    knowledge, model, items, batch = cut_case(layers=2, n=4)
    sub, classes = restrict(batch, model.plan, CLASS_NODES)
    linked = {g for p in items for g in p.omics_genes}
    drivers = knowledge["gene", "driver_of", "cancer_type"].edge_index
    class_drivers = {int(g) for g, c in drivers.t().tolist() if c in CLASS_NODES.tolist()}
    # two layers: genes are read in the first layer only as sources of evidence and class nodes
    assert set(sub["gene"].node_id.tolist()) == linked | class_drivers
    assert sub["cancer_type"].node_id[classes].tolist() == CLASS_NODES.tolist()
    assert sub["patient"].num_nodes == 4 and sub["omics"].num_nodes == batch["omics"].num_nodes
    assert knowledge_edges(sub) < knowledge_edges(batch)
    # the cut keeps every in-edge of a node whose state the last layer reads
    masks = receptive_field(batch, model.plan[1:], {"patient": torch.arange(4), "cancer_type": CLASS_NODES})
    ei = batch["gene", "driver_of", "cancer_type"].edge_index
    into_classes = masks["cancer_type"][ei[1]]
    assert masks["gene"][ei[0][into_classes]].all()


def test_model_cuts_batches_only_from_the_threshold(monkeypatch):
    import clinicmm.fusion.models.kg_gnn as kg_gnn

    calls = []
    real = kg_gnn.restrict
    monkeypatch.setattr(kg_gnn, "restrict", lambda *a: calls.append(1) or real(*a))
    knowledge = random_knowledge()
    model = KGGNNFusion(
        DIMS, 3, NUM_NODES, CLASS_NODES, schema(DIMS), hidden=16, subgraph_min_edges=knowledge_edges(knowledge) + 1
    ).eval()
    batch = build_batch(knowledge, patients(3), DIMS)
    model(batch)
    assert calls == []
    model.subgraph_min_edges = knowledge_edges(knowledge)
    model(batch)
    assert calls == [1]


def test_training_cuts_batches_from_the_configured_threshold(monkeypatch):
    import warnings

    import clinicmm.fusion.models.kg_gnn as kg_gnn
    from clinicmm.config import TrainingSpec
    from clinicmm.training.fit import fit

    calls = []
    real = kg_gnn.restrict
    monkeypatch.setattr(kg_gnn, "restrict", lambda *a: calls.append(1) or real(*a))
    knowledge = random_knowledge()
    items = patients(8)
    for threshold, cut in ((knowledge_edges(knowledge) + 1, False), (knowledge_edges(knowledge), True)):
        calls.clear()
        model = KGGNNFusion(DIMS, 3, NUM_NODES, CLASS_NODES, schema(DIMS), hidden=16, subgraph_min_edges=None)
        spec = TrainingSpec(max_epochs=1, batch_size=4, hidden=16, subgraph_min_edges=threshold, num_neighbors=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(model, items, items[:4], knowledge, DIMS, spec, 3, progress=False)
        assert bool(calls) is cut and model.subgraph_min_edges == threshold and model.num_neighbors == 3


def _in_degrees(edge_index: torch.Tensor, num_dst: int) -> torch.Tensor:
    return torch.bincount(edge_index[1], minlength=num_dst)


@pytest.mark.parametrize("limit", [1, 3])
def test_neighbour_sampling_keeps_at_most_the_limit_per_node_and_relation(limit):
    _, model, _, batch = cut_case(layers=3, n=6)
    full, _ = restrict(batch, model.plan, CLASS_NODES)
    sampled, classes = restrict(batch, model.plan, CLASS_NODES, num_neighbors=limit)
    assert sampled["cancer_type"].node_id[classes].tolist() == CLASS_NODES.tolist()
    for et in full.edge_types:
        src, _, dst = et
        if src in NUM_NODES and dst in NUM_NODES:
            exact = _in_degrees(full[et].edge_index, full[dst].num_nodes)  # a node's in-degree in the graph
            position = {int(n): i for i, n in enumerate(full[dst].node_id)}
            kept = torch.zeros_like(exact)
            for n in sampled[dst].node_id[sampled[et].edge_index[1]].tolist():  # back to full-cut positions
                kept[position[n]] += 1
            # a node whose in-edges were drawn keeps min(degree, limit) of them, once (not once per layer)
            drawn = kept > 0
            assert (kept[drawn] == exact[drawn].clamp(max=limit)).all(), et
            assert sampled[et].edge_index.unique(dim=1).size(1) == sampled[et].edge_index.size(1)
            if dst == "cancer_type":  # the class nodes are read out: theirs are always drawn
                targets = [position[int(c)] for c in CLASS_NODES]
                assert (kept[targets] == exact[targets].clamp(max=limit)).all(), et
    assert any(
        _in_degrees(full[et].edge_index, full[et[2]].num_nodes).max() > limit
        for et in full.edge_types
        if et[0] in NUM_NODES and et[2] in NUM_NODES
    )  # the limit did bind somewhere
    # the batch's own evidence links are never sampled: every linked gene of every patient is still there
    assert sampled["omics", "altered", "gene"].edge_index.size(1) == batch["omics", "altered", "gene"].edge_index.size(
        1
    )
    assert sampled["gene", "rev_altered", "omics"].edge_index.size(1) == batch[
        "omics", "altered", "gene"
    ].edge_index.size(1)


def test_neighbour_samples_are_drawn_per_batch_from_the_torch_generator():
    _, model, _, batch = cut_case(layers=2, n=6)
    et = ("pathway", "rev_member_of", "gene")

    def sample(seed):
        torch.manual_seed(seed)
        sub, _ = restrict(batch, model.plan, CLASS_NODES, num_neighbors=1)
        return sub[et].edge_index[0].tolist(), sub["pathway"].node_id.tolist()

    assert sample(0) == sample(0)
    assert len({str(sample(s)) for s in range(5)}) > 1


def test_sampling_applies_in_training_only(monkeypatch):
    import clinicmm.fusion.models.kg_gnn as kg_gnn

    torch.manual_seed(0)
    knowledge = random_knowledge()
    model = KGGNNFusion(DIMS, 3, NUM_NODES, CLASS_NODES, schema(DIMS), hidden=16, subgraph_min_edges=None)
    batch = build_batch(knowledge, patients(8), DIMS)
    full = model.eval()(batch)
    model.subgraph_min_edges, model.num_neighbors = 1, 1
    assert torch.allclose(model(batch), full, atol=1e-5, rtol=1e-4)  # eval: every edge, exact
    limits = []
    real = kg_gnn.restrict
    monkeypatch.setattr(kg_gnn, "restrict", lambda *a: limits.append(a[3]) or real(*a))
    model.train()(batch)
    model.eval()(batch)
    assert limits == [1, None]
