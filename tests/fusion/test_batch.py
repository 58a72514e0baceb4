"""Patient batches as HeteroData: fixed schema, evidence nodes and edges only for present modalities, dense views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import (
    PatientEvidence,
    build_batch,
    collate,
    dropout_masks,
    schema,
    without_modality,
)

DIMS = {"image": 4, "note": 3, "omics": 2}


def knowledge(with_indicates: bool = True) -> HeteroData:
    """10 genes, 3 pathways, 4 cancer types, 6 concepts; optionally without any 'indicates' edge type at all."""
    g = HeteroData()
    for t, n in (("gene", 10), ("pathway", 3), ("cancer_type", 4), ("concept", 6)):
        g[t].num_nodes = n
        g[t].node_id = torch.arange(n)
    rels = [("gene", "member_of", "pathway", [[0, 1, 2], [0, 1, 2]]), ("gene", "driver_of", "cancer_type", [[0], [1]])]
    if with_indicates:
        rels.append(("concept", "indicates", "cancer_type", [[0, 1], [0, 1]]))
    for src, rel, dst, ei in rels:
        g[src, rel, dst].edge_index = torch.tensor(ei)
        g[dst, "rev_" + rel, src].edge_index = torch.tensor(ei).flip(0)
    return g


def patients() -> list[PatientEvidence]:
    return [
        PatientEvidence(0, np.full(4, 1.0), np.full(3, 2.0), np.full(2, 3.0), [5], [1, 2, 2], [3, 4]),
        PatientEvidence(1, None, np.full(3, 5.0), None, [5], [3], [7]),
        PatientEvidence(-1, np.full(4, 6.0), None, np.full(2, 7.0), [0], [4], [8, 9]),
    ]


def edges(batch: HeteroData, edge_type: tuple[str, str, str]) -> list[list[int]]:
    return batch[edge_type].edge_index.tolist()


def test_schema_is_constant_with_and_without_modalities() -> None:
    full = build_batch(knowledge(), patients(), DIMS)
    no_image = build_batch(knowledge(with_indicates=False), [patients()[1]], DIMS)
    expected = schema(DIMS)
    assert full.metadata() == no_image.metadata() == (expected[0], expected[1])
    assert len(expected[1]) == 18 and ("cancer_type", "rev_indicates", "concept") in expected[1]
    assert no_image["image"].x.shape == (0, 4) and no_image["image"].num_nodes == 0
    assert no_image["concept", "indicates", "cancer_type"].edge_index.shape == (2, 0)
    assert full.validate(raise_on_error=True) and no_image.validate(raise_on_error=True)


def test_evidence_nodes_and_edges_only_for_present_modalities() -> None:
    batch = build_batch(knowledge(), patients(), DIMS)
    assert batch["patient"].num_nodes == 3 and batch["patient"].y.tolist() == [0, 1, -1]
    assert edges(batch, ("image", "of", "patient")) == [[0, 1], [0, 2]]
    assert edges(batch, ("note", "of", "patient")) == [[0, 1], [0, 1]]
    assert edges(batch, ("patient", "rev_of", "omics")) == [[0, 2], [0, 1]]
    # patient 1 lists image concepts and omics genes but has neither modality: those links are not made
    assert edges(batch, ("image", "shows", "concept")) == [[0, 1], [5, 0]]
    assert edges(batch, ("note", "mentions", "concept")) == [[0, 0, 1], [1, 2, 3]]  # duplicate concept merged
    assert edges(batch, ("omics", "altered", "gene")) == [[0, 0, 1, 1], [3, 4, 8, 9]]
    assert edges(batch, ("gene", "rev_altered", "omics")) == [[3, 4, 8, 9], [0, 0, 1, 1]]
    assert batch["note"].x.tolist() == [[2.0] * 3, [5.0] * 3]


def test_dense_views_are_zero_where_missing() -> None:
    store = build_batch(knowledge(), patients(), DIMS)["patient"]
    assert store.present.tolist() == [[True, True, True], [False, True, False], [True, False, True]]
    assert store.x_image.dtype == torch.float32
    assert store.x_image.tolist() == [[1.0] * 4, [0.0] * 4, [6.0] * 4]
    assert store.x_omics.tolist() == [[3.0] * 2, [0.0] * 2, [7.0] * 2]


def test_dropped_modality_is_exactly_missing() -> None:
    drop = {"note": np.array([True, False, False]), "omics": np.array([False, False, True])}
    dropped = build_batch(knowledge(), patients(), DIMS, drop)
    edited = patients()
    edited[0].note, edited[2].omics = None, None
    missing = build_batch(knowledge(), edited, DIMS)
    for key in ("x_image", "x_note", "x_omics", "present"):
        assert torch.equal(dropped["patient"][key], missing["patient"][key])
    for edge_type in schema(DIMS)[1]:
        assert torch.equal(dropped[edge_type].edge_index, missing[edge_type].edge_index), edge_type
    assert edges(dropped, ("note", "mentions", "concept")) == [[0], [3]]
    assert dropped["omics"].num_nodes == 1 and dropped["patient"].x_note[0].abs().sum() == 0


def test_knowledge_is_copied_not_modified() -> None:
    g = knowledge(with_indicates=False)
    batch = build_batch(g, patients(), DIMS)
    assert "patient" not in g.node_types and ("concept", "indicates", "cancer_type") not in g.edge_types
    assert torch.equal(batch["gene", "member_of", "pathway"].edge_index, g["gene", "member_of", "pathway"].edge_index)


def test_without_modality_removes_it_and_leaves_the_batch_alone() -> None:
    batch = build_batch(knowledge(), patients(), DIMS)
    ablated = without_modality(batch, "omics")
    assert ablated["omics"].x.shape == (0, 2) and ablated["omics", "altered", "gene"].edge_index.shape == (2, 0)
    assert ablated["patient"].present[:, 2].sum() == 0 and ablated["patient"].x_omics.abs().sum() == 0
    assert ablated.metadata() == batch.metadata() and ablated.validate()
    assert batch["omics"].num_nodes == 2 and batch["patient"].present[:, 2].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="Expected a modality"):
        without_modality(batch, "xray")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda ps: setattr(ps[0], "image", np.zeros(5)), r"image embedding of shape \(4,\) for patient 0"),
        (lambda ps: setattr(ps[2], "omics", np.array([np.nan, 1.0])), "non-finite"),
        (lambda ps: setattr(ps[1], "note_concepts", [6]), r"note_concepts of patient 1 .* \[0, 6\)"),
        (lambda ps: setattr(ps[1], "omics_genes", [-1]), "omics_genes of patient 1"),
    ],
)
def test_bad_patient_evidence_is_named(change, match) -> None:
    ps = patients()
    change(ps)
    with pytest.raises(ValueError, match=match):
        build_batch(knowledge(), ps, DIMS)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="Expected dims with keys"):
        build_batch(knowledge(), patients(), {"image": 4, "note": 3})
    with pytest.raises(ValueError, match="bool mask of shape"):
        build_batch(knowledge(), patients(), DIMS, {"note": np.array([True, False])})
    with pytest.raises(ValueError, match="non-empty list"):
        build_batch(knowledge(), [], DIMS)
    g = knowledge()
    g["gene", "interacts", "gene"].edge_index = torch.tensor([[0], [1]])
    with pytest.raises(ValueError, match="unknown"):
        build_batch(g, patients(), DIMS)
    g = knowledge()
    del g["concept"]
    with pytest.raises(ValueError, match="missing"):
        collate(g, DIMS)


def test_dropout_masks_keep_one_modality_per_patient() -> None:
    ps = patients() * 100
    drop = dropout_masks(ps, 0.9, np.random.default_rng(0))
    has = np.array([[p.image is not None, p.note is not None, p.omics is not None] for p in ps])
    stacked = np.stack([drop["image"], drop["note"], drop["omics"]], 1)
    assert not (stacked & ~has).any()  # never "drops" what is missing
    assert ((has & ~stacked).sum(1) >= 1).all()  # every patient keeps one modality
    assert stacked.sum() > 200  # and at p=0.9 most droppable ones go


def test_collate_works_as_a_dataloader_collate_fn() -> None:
    loader = DataLoader(patients() * 4, batch_size=5, collate_fn=collate(knowledge(), DIMS, 0.5, seed=1))
    batches = list(loader)
    assert [b["patient"].num_nodes for b in batches] == [5, 5, 2]
    assert all(b.metadata() == schema(DIMS) and b.validate() for b in batches)
    present = torch.cat([b["patient"].present for b in batches])
    assert present.any(1).all() and present.sum() < 20  # 20 modalities in all, some dropped, none emptied
