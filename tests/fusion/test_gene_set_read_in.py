"""training.gene_set_input: kg_gnn / kg_rgcn read each patient's omics pooled over the graph's gene sets through the
sets' own node embeddings (GeneSetReadIn), so which genes a patient alters reaches its logits through the pathways
they belong to."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_kg_pathway import DIMS, GENES, graph

from clinicmm.fusion.batch import PatientEvidence, build_batch
from clinicmm.fusion.models.wrappers import LinearOffset, reads_gene_sets, zero_output
from clinicmm.fusion.registry import build_model, pools_gene_sets

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")

REAL = [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]  # pathway 0: genes 0-2, pathway 1: genes 3-5
REWIRED = [(0, 0), (3, 0), (4, 0), (1, 1), (2, 1), (5, 1)]  # same degrees, other members


def network(name: str, members, genes=GENES, seed: int = 0):
    torch.manual_seed(seed)
    g = graph(members)
    return g, build_model(name, DIMS, 2, g, torch.tensor([0, 1]), 8, 0.0, genes, 7 if genes else None).eval()


def patients() -> list[PatientEvidence]:
    raised = np.array([3.0, 3.0, 3.0, 0, 0, -1.0, 0, 1.0], dtype=np.float32)  # pathway 0 up, gene 0 mutated
    return [
        PatientEvidence(label=0, image=None, note=None, omics=raised),
        PatientEvidence(label=1, image=np.ones(4, dtype=np.float32), note=None, omics=None),  # no omics
    ]


@pytest.mark.parametrize("name", ["kg_gnn", "kg_rgcn"])
def test_set_memberships_reach_the_logits_through_the_read_in_only(name: str) -> None:
    """The test graph has no gene -> cancer-type edges, so without the read-in the pathways cannot reach a patient:
    the same weights on a rewired graph give the same logits. With it, the patient with omics moves; the one
    without omics does not (it pools nothing)."""
    for genes, moves in ((None, False), (GENES, True)):
        (g, real), (_, rewired) = network(name, REAL, genes), network(name, REWIRED, genes)
        rewired.load_state_dict(real.state_dict())  # same weights; the sets are buffers rebuilt from the graph
        assert (real.gene_sets is not None) == moves == reads_gene_sets(real)
        batch = build_batch(g, patients(), DIMS)
        with torch.no_grad():
            a, b = real(batch), rewired(batch)
        assert torch.allclose(a[1], b[1], atol=1e-6)
        assert (not torch.allclose(a[0], b[0], atol=1e-4)) == moves


def test_the_offsets_zeroed_output_layer_is_still_the_read_out() -> None:
    """``zero_output`` zeroes a network's last linear layer so a correction of logreg starts at logreg: with the
    read-in that must still be the read-out, not one of the read-in's maps."""
    g, net = network("kg_gnn", REAL)
    batch = build_batch(g, patients(), DIMS)
    corrected = LinearOffset(zero_output(net), build_model("logreg", DIMS, 2, g, torch.tensor([0, 1]))).eval()
    with torch.no_grad():
        start = corrected(batch) - corrected.base(batch)
    assert torch.allclose(start, torch.zeros_like(start))  # every patient: logreg's logits exactly
    assert any(m.weight.abs().sum() > 0 for m in net.gene_sets.maps)


def test_which_models_get_the_feature_genes() -> None:
    assert pools_gene_sets("kg_pathway", False) and pools_gene_sets("kg_logreg", False)
    assert pools_gene_sets("kg_gnn", True) and pools_gene_sets("kg_rgcn", True)
    assert not pools_gene_sets("kg_gnn", False) and not pools_gene_sets("concat", True)
    _, too_small = network("kg_gnn", [(1, 0), (2, 0)])  # no set with MIN_MEMBERS measured members: no read-in
    assert too_small.gene_sets is None


@pytest.mark.parametrize("gene_set_input", [True, False])
def test_the_bundle_records_it_and_rebuilds_the_same_model(
    genomics_cohort, genomics_workflow, tmp_path, gene_set_input: bool
) -> None:
    from clinicmm.keys import Split
    from clinicmm.pipeline import stages
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.data import TrainingData

    genomics_cohort(tmp_path, 40)
    wf = genomics_workflow(
        tmp_path,
        "sets",
        ["kg_gnn"],
        training={"max_epochs": 2, "patience": 2, "hidden": 8, "batch_size": 16, "gene_set_input": gene_set_input},
    )  # fmt: skip
    for stage in ("ingest", "encode", "train"):
        stages.FUNCTIONS[stage](wf, False)
    folder = wf.work / "train" / "kg_gnn"
    meta = json.loads((folder / "model.json").read_text())
    bundle = ModelBundle.load(folder)
    assert meta["gene_set_input"] is bundle.gene_set_input is gene_set_input
    model = bundle.build_model()
    assert reads_gene_sets(model) is gene_set_input
    items, _ = TrainingData(wf).items(Split.TEST, bundle.scaler)
    batch = build_batch(bundle.knowledge.to_hetero(), items, bundle.dims)
    if not gene_set_input:  # a bundle from before the key (no gene_set_input in model.json) is rebuilt without it
        (folder / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "gene_set_input"}))
        with torch.no_grad():
            assert torch.allclose(ModelBundle.load(folder).build_model()(batch), model(batch))
    else:  # the saved weights need the read-in: rebuilt without it they do not fit
        from clinicmm.errors import ModelError

        (folder / "model.json").write_text(json.dumps(meta | {"gene_set_input": False}))
        with pytest.raises(ModelError, match="weights do not fit"):
            ModelBundle.load(folder).build_model()
        (folder / "model.json").write_text(json.dumps(meta | {"gene_set_input": "yes"}))  # damaged: named, not guessed
        with pytest.raises(ModelError, match="gene_set_input 'yes' in model.json"):
            ModelBundle.load(folder).build_model()
