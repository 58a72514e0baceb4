"""The knowledge ablation's graph: every relation rewired at random, each node keeping its degree in it."""

from collections import Counter

import pytest

from clinicmm.knowledge.graph import KnowledgeGraph


@pytest.fixture(scope="module")
def graphs():
    kg = KnowledgeGraph.default()
    return kg, kg.rewired(seed=0)


def test_rewiring_keeps_nodes_edge_counts_and_every_degree(graphs):
    kg, rewired = graphs
    assert rewired.edge_types() == kg.edge_types()
    for key, edges in kg._edges.items():
        again = rewired._edges[key]
        assert len(again) == len(edges) and len(set(again)) == len(again)  # no duplicate edge
        assert Counter(s for s, _ in again) == Counter(s for s, _ in edges)  # out-degree of every source
        assert Counter(d for _, d in again) == Counter(d for _, d in edges)  # in-degree of every destination
    for t in ("gene", "pathway", "cancer_type", "concept"):
        assert rewired.names(t) == kg.names(t)  # node order unchanged: patient links resolve to the same nodes


def test_rewiring_scrambles_the_biology_reproducibly(graphs):
    kg, rewired = graphs
    members = set(kg._edges[next(k for k in kg._edges if k[1].value == "member_of")])
    again = set(rewired._edges[next(k for k in rewired._edges if k[1].value == "member_of")])
    assert len(members & again) / len(members) < 0.2  # most gene-pathway memberships moved
    assert rewired.fingerprint() != kg.fingerprint()
    assert kg.rewired(seed=0).fingerprint() == rewired.fingerprint() != kg.rewired(seed=1).fingerprint()
    assert kg.fingerprint() == KnowledgeGraph.default().fingerprint()  # the original is untouched
