"""The knowledge-pooled model: which features each gene set pools, the pooled values, what the graph changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import PatientEvidence, build_batch
from clinicmm.fusion.models.kg_pathway import MIN_MEMBERS, RELU_MEAN, RELU_SD, KGPathwayFusion, gene_sets
from clinicmm.fusion.registry import build_model
from clinicmm.keys import KNOWLEDGE_NODES

pytestmark = pytest.mark.usefixtures("one_thread")

DIMS = {"image": 4, "note": 3, "omics": 8}


def graph(member_of: list[tuple[int, int]], driver_of: list[tuple[int, int]] = ()) -> HeteroData:
    """6 genes, 2 pathways, 2 cancer types; only the relations the pooled model reads."""
    g = HeteroData()
    sizes = {"gene": 6, "pathway": 2, "cancer_type": 2, "concept": 1}
    for t in KNOWLEDGE_NODES:
        g[t.value].num_nodes = sizes[t.value]
        g[t.value].node_id = torch.arange(sizes[t.value])
    for (src, rel, dst), pairs in (
        (("gene", "member_of", "pathway"), member_of),
        (("gene", "driver_of", "cancer_type"), driver_of),
        (("concept", "indicates", "cancer_type"), []),
    ):
        g[src, rel, dst].edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t().contiguous()
    return g


# features 0-5: expression of genes 0-5; feature 6: an unlinked probe; feature 7: a mutation flag of gene 0
GENES = [0, 1, 2, 3, 4, 5, -1, 0]
MEMBERS = [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1)]  # pathway 0: genes 0-2 (+ gene 0's mutation); pathway 1: 3-4


def test_sets_hold_the_linked_features_of_their_genes_and_small_sets_are_left_out() -> None:
    index = gene_sets(graph(MEMBERS, driver_of=[(5, 1)]), GENES, n_expression=7)
    pairs = sorted(zip(index["feature"].tolist(), index["set"].tolist()))
    # pathway 0 pools features 0, 1, 2 and the mutation flag 7; pathway 1 (2 features) and the cancer type
    # (1 feature) are below MIN_MEMBERS and left out; the unlinked feature 6 is in no set
    assert MIN_MEMBERS == 3 and int(index["num_sets"]) == 1
    assert pairs == [(0, 0), (1, 0), (2, 0), (7, 0)]


def test_pooled_values_are_the_centred_sums_of_the_members() -> None:
    model = KGPathwayFusion(DIMS, 2, graph(MEMBERS), GENES, n_expression=7, hidden=8, dropout=0.0)
    omics = torch.tensor([[2.0, 2.0, -1.0, 9.0, 9.0, 9.0, 9.0, 1.0], [0.0] * 8])
    up, down, mutated = model.pooled(omics).T  # one set: columns up, down, mutated
    scale = RELU_SD * math.sqrt(3)
    assert up[0].item() == pytest.approx((4.0 - 3 * RELU_MEAN) / scale, rel=1e-5)
    assert down[0].item() == pytest.approx((1.0 - 3 * RELU_MEAN) / scale, rel=1e-5)
    assert mutated.tolist() == pytest.approx([1.0, 0.0])  # one mutation member, flagged for the first patient
    assert up[1].item() == 0.0 and down[1].item() == 0.0  # nothing measured in the set (all at the mean): 0


def test_a_smaller_panel_pools_the_members_it_measured() -> None:
    """A gene the patient's panel lacks has z exactly 0 (the training mean): the set is pooled over the others,
    so a patient on a smaller panel is not shifted against one measured on the full panel."""
    model = KGPathwayFusion(DIMS, 2, graph(MEMBERS), GENES, n_expression=7, hidden=8, dropout=0.0)
    omics = torch.tensor([[2.0, 0.0, -1.0, 0, 0, 0, 0, 0]])
    up, down, _ = model.pooled(omics).T
    scale = RELU_SD * math.sqrt(2)
    assert up[0].item() == pytest.approx((2.0 - 2 * RELU_MEAN) / scale, rel=1e-5)
    assert down[0].item() == pytest.approx((1.0 - 2 * RELU_MEAN) / scale, rel=1e-5)


def test_a_rewired_graph_pools_other_features_and_changes_the_logits() -> None:
    real = graph([(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)])
    scrambled = graph([(0, 0), (3, 0), (4, 0), (1, 1), (2, 1), (5, 1)])  # same degrees, other members
    torch.manual_seed(0)
    a = KGPathwayFusion(DIMS, 2, real, GENES, n_expression=7, hidden=8, dropout=0.0).eval()
    b = KGPathwayFusion(DIMS, 2, scrambled, GENES, n_expression=7, hidden=8, dropout=0.0).eval()
    b.load_state_dict(a.state_dict())  # same weights: only the sets differ (they are buffers, not weights)
    patient = PatientEvidence(
        label=0, image=None, note=None, omics=np.array([3.0, 3.0, 3.0, 0, 0, 0, 0, 0], dtype=np.float32)
    )
    batch = build_batch(real, [patient], DIMS)
    assert not torch.allclose(a.pooled(batch["patient"].x_omics), b.pooled(batch["patient"].x_omics))
    with torch.no_grad():
        assert not torch.allclose(a(batch), b(batch))


def test_the_registry_builds_it_with_the_feature_genes_and_without_omics() -> None:
    g = graph(MEMBERS)
    model = build_model("kg_pathway", DIMS, 3, g, torch.tensor([0, 1]), 8, 0.1, GENES, 7)
    assert isinstance(model, KGPathwayFusion) and model.num_sets == 1
    bare = build_model("kg_pathway", DIMS, 3, g, torch.tensor([0, 1]), 8, 0.1)  # no genomics: nothing to pool
    patients = [PatientEvidence(label=1, image=np.full(4, 0.1, dtype=np.float32), note=None, omics=None)]
    logits = bare(build_batch(g, patients, DIMS))
    assert bare.num_sets == 0 and bare.pathways is None and logits.shape == (1, 3) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="one gene index per omics feature"):
        build_model("kg_pathway", DIMS, 3, g, torch.tensor([0, 1]), 8, 0.1, GENES[:3], 3)


def test_it_learns_a_signal_spread_over_different_genes_of_one_pathway() -> None:
    """Each patient of class 1 raises 2 of pathway 0's 3 genes (a different pair each); class 0 raises none.
    With noise, the pooled 'up' of pathway 0 separates the classes."""
    g = graph([(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)])
    rng = torch.Generator().manual_seed(0)
    patients = []
    for i in range(60):
        z = torch.randn(8, generator=rng) * 0.5
        z[6:] = 0
        if i % 2:
            z[[j for j in range(3) if j != i % 3]] += 2.5
        patients.append(PatientEvidence(label=i % 2, image=None, note=None, omics=z.numpy()))
    torch.manual_seed(0)
    model = KGPathwayFusion(DIMS, 2, g, GENES, n_expression=7, hidden=8, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    batch = build_batch(g, patients, DIMS)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), batch["patient"].y).backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model(batch).argmax(1) == batch["patient"].y).float().mean().item()
    assert accuracy >= 0.95


def test_trained_and_served_models_pool_the_same_sets(tmp_path, genomics_cohort, genomics_workflow) -> None:
    """The train stage builds the sets from the fitted preprocessor; the bundle rebuilds the same ones from its
    genomics.json and graph (the sets are not in the weights file), for both pooled models."""
    import warnings

    from clinicmm.pipeline.stages import encode_stage, ingest_stage, train_stage
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.data import TrainingData, omics_gene_index

    genomics_cohort(tmp_path, 30)
    training = {"max_epochs": 2, "patience": 2, "hidden": 8, "batch_size": 16}
    models = ["kg_pathway", "kg_logreg"]
    wf = genomics_workflow(tmp_path, "tiny", models, primary_model="kg_pathway", training=training)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ingest_stage(wf)
        encode_stage(wf)
        train_stage(wf, progress=False)
    data = TrainingData(wf)
    genes, n_expression = omics_gene_index(data.genomics, data.kg)
    assert n_expression == 8 and sum(g >= 0 for g in genes) == 8  # the cohort's 8 genes are graph genes
    assert omics_gene_index(data.genomics, data.kg, "concat") == (None, None)  # only the pooled models need them
    for name in models:
        bundle = ModelBundle.load(wf.work / "train" / name)
        pooling = ("set_", "count", "is_expression", "pair_weight", "dense")
        buffers = [k for k in bundle.state_dict if any(word in k for word in pooling)]
        assert not buffers, name  # the sets are buffers, not weights
        served = bundle.build_model()
        served = getattr(served, "net", served)  # kg_pathway corrects the logistic regression (training.offset)
        assert served.pool.num_sets > 0, name
        rebuilt = build_model(name, bundle.dims, len(bundle.classes), data.kg.to_hetero(),
                              bundle.class_nodes(), bundle.hidden, bundle.dropout, genes, n_expression)  # fmt: skip
        assert served.pool.pairs == rebuilt.pool.pairs > 0, name
        omics = torch.randn(5, bundle.dims["omics"], generator=torch.Generator().manual_seed(0))
        assert torch.equal(served.pool(omics), rebuilt.pool(omics)), name  # the same sets, members and weights


def test_kg_logreg_is_logreg_with_the_pooled_view_appended() -> None:
    from clinicmm.fusion.models.kg_pathway import KGLinearFusion
    from clinicmm.fusion.models.linear import LinearFusion
    from clinicmm.fusion.registry import CLOSED_FORM

    g = graph(MEMBERS)
    model = build_model("kg_logreg", DIMS, 2, g, torch.tensor([0, 1]), 8, 0.1, GENES, 7)
    assert isinstance(model, KGLinearFusion) and "kg_logreg" in CLOSED_FORM
    omics = np.array([2.0, 2.0, -1.0, 9.0, 9.0, 9.0, 9.0, 1.0], dtype=np.float32)
    patients = [
        PatientEvidence(label=0, image=np.ones(4, dtype=np.float32), note=None, omics=omics),
        PatientEvidence(label=1, image=np.ones(4, dtype=np.float32), note=None, omics=None),
    ]
    batch = build_batch(g, patients, DIMS)
    x = model.features(batch)
    plain = LinearFusion.features(batch)
    assert x.shape == (2, plain.shape[1] + 3) == (2, model.in_features)
    assert torch.equal(x[:, : plain.shape[1]], plain)
    assert torch.allclose(x[0, plain.shape[1] :], model.pool(batch["patient"].x_omics)[0])
    assert torch.equal(x[1, plain.shape[1] :], torch.zeros(3))  # no omics: the pooled view is zero, not pooled noise


@pytest.mark.parametrize("dense", [True, False])
def test_both_ways_of_pooling_give_the_sums_over_every_membership_pair(monkeypatch, dense: bool) -> None:
    """Pooling is a (features x sets) product when that matrix is small and well filled (arm-level copy number:
    a few regions, each a member of a set once per gene it covers) and a gather / index-add over the distinct
    (feature, set) pairs otherwise, each weighted by its count. Both equal the plain sums over every membership
    pair, computed here in float64, well within float32 rounding (summing thousands of repeats one by one was not:
    3.6e-4 off on a 1,921-patient arm-level cohort)."""
    import clinicmm.fusion.models.kg_pathway as kg_pathway
    from clinicmm.fusion.models.kg_pathway import GeneSetPooling

    monkeypatch.setattr(kg_pathway, "DENSE_MAX", 10**9 if dense else 0)
    rng = np.random.default_rng(0)
    genes, pathways = 400, 30
    g = graph([])
    g["gene"].num_nodes, g["pathway"].num_nodes = genes, pathways
    g["gene"].node_id, g["pathway"].node_id = torch.arange(genes), torch.arange(pathways)
    edges = [(gene, p) for p in range(pathways) for gene in rng.choice(genes, 40, replace=False)]
    g["gene", "member_of", "pathway"].edge_index = torch.tensor(edges).t().contiguous()
    regions = [sorted(rng.choice(genes, 120, replace=False).tolist()) for _ in range(6)]
    features = [*regions, 7, 8, 9, 3]  # six regions, three genes' expression, gene 3's mutation flag
    pool = GeneSetPooling(g, features, n_expression=9, dim=len(features))
    assert (pool.dense is not None) == dense
    omics = torch.tensor(rng.normal(size=(5, len(features))), dtype=torch.float32)
    omics[:, -1] = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    omics[1, :3] = 0.0  # unmeasured (the training mean): not counted
    index = gene_sets(g, features, 9)
    x, sets = omics.double()[:, index["feature"]], int(index["num_sets"])
    expr = index["feature"] < 9

    def sums(part: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return torch.zeros(5, sets, dtype=torch.float64).index_add_(1, index["set"][rows], part[:, rows])

    measured = sums((x != 0).double(), expr)
    m = measured.clamp_min(1.0)
    expected = [torch.where(measured > 0, (sums(p, expr) - RELU_MEAN * m) / (RELU_SD * m.sqrt()), 0.0)
                for p in (x.clamp_min(0), (-x).clamp_min(0))]  # fmt: skip
    counts = torch.bincount(index["set"][~expr], minlength=sets).double().clamp_min(1.0)
    expected.append(sums(x.clamp(0, 1), ~expr) / counts.sqrt())
    assert int(index["feature"].numel()) > 2 * len(torch.unique(torch.stack([index["feature"], index["set"]]), dim=1).T)
    torch.testing.assert_close(pool(omics).double(), torch.cat(expected, 1), rtol=1e-6, atol=1e-5)
