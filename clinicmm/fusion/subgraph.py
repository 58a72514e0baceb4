"""Cut a batch down to the knowledge nodes its outputs depend on: the receptive field of patients and class nodes.

An L-layer message-passing model's output at a node depends only on its in-neighbourhood L hops deep, along the
edges each layer actually reads (the model's message plan, :func:`clinicmm.fusion.kg_gnn.message_plan`). Walking
the plan backwards from the read-out nodes (every patient, the cancer-type nodes the classes are scored against)
gives the knowledge nodes whose states matter. Every in-edge of a node whose state a later layer reads is kept, so
that state is computed over exactly the neighbours it has in the full graph (HGT's attention softmax and R-GCN's
mean see the same sets); nodes reached only at the deepest hop contribute their initial embedding, which needs no
neighbours. The patient logits are therefore those of the full graph (up to float summation order), while a step
touches O(batch x degree) knowledge nodes and edges instead of the whole graph: memory and time grow with the
batch, not with the graph or the cohort.

This is the typed, plan-aware form of ``torch_geometric.utils.k_hop_subgraph`` (which walks one homogeneous edge
list, every hop along every edge); ``HeteroData.subgraph`` does the re-indexing. ``NeighborLoader`` / ``HGTLoader``
would sample instead (and need pyg-lib or torch-sparse, which have no wheels here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import KNOWLEDGE_RELS, PATIENT
from clinicmm.keys import KNOWLEDGE_NODES, Node

EdgeType = tuple[str, str, str]
Plan = Sequence[tuple[Sequence[str], Sequence[EdgeType]]]
KNOWLEDGE_TYPES: tuple[str, ...] = tuple(t.value for t in KNOWLEDGE_NODES)
CANCER = Node.CANCER.value


def knowledge_edges(batch: HeteroData) -> int:
    """Number of knowledge-graph edges in ``batch``, one direction (what ``subgraph_min_edges`` compares against)."""
    return sum(int(batch[et].edge_index.size(1)) for et in KNOWLEDGE_RELS if et in batch.edge_types)


def receptive_field(batch: HeteroData, plan: Plan, seeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per node type, a bool mask of the nodes whose initial state can reach ``seeds`` through ``plan``.

    ``seeds`` maps node types to the indices read out after the last layer; ``plan`` lists per layer (first to
    last) the node types it reads and the edge types it passes messages along.
    """
    device = batch[PATIENT].y.device
    needed = {t: torch.zeros(int(batch[t].num_nodes), dtype=torch.bool, device=device) for t in batch.node_types}
    for t, index in seeds.items():
        needed[t][index] = True
    for _, edges in reversed(list(plan)):
        grown = {t: mask.clone() for t, mask in needed.items()}  # a node keeps its own state (residual)
        for src, rel, dst in edges:
            edge_index = batch[src, rel, dst].edge_index
            if edge_index.numel():
                grown[src][edge_index[0][needed[dst][edge_index[1]]]] = True
        needed = grown
    return needed


def restrict(batch: HeteroData, plan: Plan, class_nodes: Tensor) -> tuple[HeteroData, Tensor]:
    """``batch`` cut to the receptive field of its patients and ``class_nodes``, and the class nodes' new indices.

    Patient and evidence nodes are kept whole (they are the batch); knowledge nodes keep their ``node_id`` (the
    index into the model's embedding tables), so the model runs on the result unchanged.
    """
    seeds = {PATIENT: torch.arange(int(batch[PATIENT].num_nodes)), CANCER: class_nodes}
    masks = receptive_field(batch, plan, seeds)
    sub = batch.subgraph({t: masks[t] for t in KNOWLEDGE_TYPES})
    position = torch.cumsum(masks[CANCER].long(), 0) - 1
    return sub, position[class_nodes]
