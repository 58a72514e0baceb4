"""Structural embeddings of the knowledge graph's nodes, from the graph alone (no patients, no labels).

Genes and concepts are *members*, pathways and cancer types are *sets* (``gene member_of pathway``, ``gene
driver_of cancer_type``, ``concept indicates cancer_type``). The member x set incidence matrix, normalised by both
degrees as in spectral co-clustering (Dhillon 2001), is factorised by a truncated SVD (scikit-learn's randomised
solver, fixed seed): members that share sets get nearby vectors, and so do sets that share members. A gene that is
in no set has no structure to give and gets no vector.

The idea: a patient's omics evidence reads the states of the genes it altered, and in the first message-passing
layer those are the genes' own initial embeddings; drawn at random, two genes of one pathway are unrelated there,
started from these vectors they are not (the pathway-level sharing P-NET builds in by hand).
``training.node_init: graph`` (see ``clinicmm.fusion.models.kg_gnn.init_nodes_from_graph``) starts the graph models
there; training then moves them as it moves any weight. Measured, it gave no consistent gain, and
``benchmarks/link_influence.py`` shows why: the trained graph networks' predictions do not depend on their gene
links at all (README, *How the fusion works*).
"""

from __future__ import annotations

import numpy as np

from clinicmm.keys import Node, Rel

MEMBERS = (Node.GENE, Node.CONCEPT)
SETS = (Node.PATHWAY, Node.CANCER)
RELATIONS = ((Node.GENE, Rel.MEMBER_OF, Node.PATHWAY), (Node.GENE, Rel.DRIVER_OF, Node.CANCER),
             (Node.CONCEPT, Rel.INDICATES, Node.CANCER))  # fmt: skip


def structural_embedding(kg, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per node type of genes, concepts, pathways and cancer types: an ``(n, dim)`` float32 array, one row per node
    in index order; a node with no edge among :data:`RELATIONS` gets a row of zeros (nothing to say about it).

    ``kg``: a :class:`~clinicmm.knowledge.graph.KnowledgeGraph`. Deterministic for a given graph, ``dim`` and
    ``seed``. Fewer components than ``dim`` when the matrix has lower rank; the rest of each row is zero.
    """
    from scipy import sparse
    from sklearn.decomposition import TruncatedSVD

    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"Expected dim a positive int (got {dim!r})")
    counts = {t: kg.num_nodes(t) for t in (*MEMBERS, *SETS)}
    row_at = dict(zip(MEMBERS, np.cumsum([0, counts[MEMBERS[0]]]).tolist()))
    col_at = dict(zip(SETS, np.cumsum([0, counts[SETS[0]]]).tolist()))
    rows, cols = [], []
    for s, rel, d in RELATIONS:
        for src, dst in kg.edge_pairs(s, rel, d):
            rows.append(row_at[s] + src)
            cols.append(col_at[d] + dst)
    shape = (sum(counts[t] for t in MEMBERS), sum(counts[t] for t in SETS))
    out_rows, out_cols = np.zeros((shape[0], dim), np.float32), np.zeros((shape[1], dim), np.float32)
    k = min(dim, min(shape) - 1)
    if rows and k >= 1:
        a = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=shape).tocsr()
        a.data[:] = 1.0  # an edge stored twice counts once
        row_deg, col_deg = np.asarray(a.sum(1)).ravel(), np.asarray(a.sum(0)).ravel()
        row_scale, col_scale = (sparse.diags(1.0 / np.sqrt(np.maximum(deg, 1.0))) for deg in (row_deg, col_deg))
        normalised = row_scale @ a @ col_scale
        svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=seed)
        out_rows[:, :k] = svd.fit_transform(normalised)  # U S
        out_cols[:, :k] = (svd.components_.T * svd.singular_values_).astype(np.float32)  # V S
        out_rows[row_deg == 0], out_cols[col_deg == 0] = 0.0, 0.0
    out = {}
    for group, at, table in ((MEMBERS, row_at, out_rows), (SETS, col_at, out_cols)):
        for t in group:
            out[t.value] = table[at[t] : at[t] + counts[t]]
    return out
