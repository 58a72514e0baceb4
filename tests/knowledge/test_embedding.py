"""The graph's structural embedding: genes that share gene sets start close, unrelated ones apart."""

from __future__ import annotations

import numpy as np
import pytest

from clinicmm.knowledge.embedding import structural_embedding
from clinicmm.knowledge.graph import KnowledgeGraph


def two_programmes() -> KnowledgeGraph:
    """Genes A1-A4 in pathways PA1/PA2, genes B1-B4 in PB1/PB2, a loner gene in no set, and a concept."""
    kg = KnowledgeGraph()
    for prefix in "AB":
        for i in range(1, 5):
            kg.add_edge("gene", f"{prefix}{i}", "member_of", "pathway", f"P{prefix}1")
            if i > 1:
                kg.add_edge("gene", f"{prefix}{i}", "member_of", "pathway", f"P{prefix}2")
    kg.add_edge("gene", "A1", "driver_of", "cancer_type", "KIRC")
    kg.add_edge("gene", "B1", "driver_of", "cancer_type", "KIRP")
    kg.add_edge("concept", "clear cell", "indicates", "cancer_type", "KIRC")
    kg.ensure_nodes("gene", ["LONER"])
    return kg


def cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_members_of_the_same_sets_start_close_and_other_programmes_apart():
    kg = two_programmes()
    e = structural_embedding(kg, 8)
    assert {t: v.shape for t, v in e.items()} == {"gene": (9, 8), "concept": (1, 8), "pathway": (4, 8),
                                                   "cancer_type": (2, 8)}  # fmt: skip
    gene = {name: e["gene"][kg.index("gene", name)] for name in kg.names("gene")}
    assert cos(gene["A2"], gene["A3"]) > 0.99  # the same two pathways
    assert cos(gene["A1"], gene["A2"]) > 0.3  # one shared pathway (and A1 drives KIRC, A2 is in PA2)
    assert abs(cos(gene["A2"], gene["B2"])) < 0.05  # no shared set: the programmes are disconnected
    assert not gene["LONER"].any()  # in no set: nothing to say, the model keeps its random start
    pathway = {name: e["pathway"][kg.index("pathway", name)] for name in kg.names("pathway")}
    assert cos(pathway["PA1"], pathway["PA2"]) > 0.5 and abs(cos(pathway["PA1"], pathway["PB1"])) < 0.05
    concept = e["concept"][0]
    kirc = e["cancer_type"][kg.index("cancer_type", "KIRC")]
    assert concept.any() and kirc.any()


def test_deterministic_and_a_function_of_the_edges():
    kg = KnowledgeGraph.default()
    first, again = structural_embedding(kg, 16), structural_embedding(kg, 16)
    assert all(np.array_equal(first[t], again[t]) for t in first)
    rewired = structural_embedding(kg.rewired(seed=0), 16)
    assert not np.allclose(first["gene"], rewired["gene"])
    assert all(np.isfinite(v).all() and v.dtype == np.float32 for v in first.values())


def test_low_rank_graphs_and_bad_sizes():
    kg = KnowledgeGraph()
    kg.add_edge("gene", "G", "member_of", "pathway", "P")
    kg.add_edge("gene", "H", "member_of", "pathway", "P")
    e = structural_embedding(kg, 4)  # a 2 x 1 matrix: no component to take; every row zero rather than a crash
    assert e["gene"].shape == (2, 4) and e["pathway"].shape == (1, 4)
    assert structural_embedding(KnowledgeGraph(), 4)["gene"].shape == (0, 4)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="dim"):
            structural_embedding(kg, bad)
