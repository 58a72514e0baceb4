"""Cut a batch down to the knowledge nodes its outputs depend on: the receptive field of patients and class nodes.

An L-layer message-passing model's output at a node depends only on its in-neighbourhood L hops deep, along the
edges each layer actually reads (the model's message plan, :func:`clinicmm.fusion.models.kg_gnn.message_plan`). Walking
the plan backwards from the read-out nodes (every patient, the cancer-type nodes the classes are scored against)
gives the knowledge nodes whose states matter. Every in-edge of a node whose state a later layer reads is kept, so
that state is computed over exactly the neighbours it has in the full graph (HGT's attention softmax and R-GCN's
mean see the same sets); nodes reached only at the deepest hop contribute their initial embedding, which needs no
neighbours. The patient logits are therefore those of the full graph (up to float summation order), while a step
touches O(batch x degree) knowledge nodes and edges instead of the whole graph: memory grows with the batch, not
with the graph or the cohort.

With ``num_neighbors`` (training only), each such node instead keeps at most that many of its in-edges per
knowledge relation, drawn at random for every batch: the neighbour sampling of GraphSAGE and of the HGT paper's
HGSampling, which bounds a step's cost by the batch and the fan-out rather than by the degrees of the graph. A node's
sample is drawn once per batch, so every layer sees the same neighbours. Edges between a patient's own evidence and
the graph (its genes, its concepts) are never sampled.

In-edges are found through a destination-sorted index of each knowledge relation, built once per graph tensor and
cached, so a cut costs O(receptive field), not O(graph). This is the typed, plan-aware form of
``torch_geometric.utils.k_hop_subgraph``; ``NeighborLoader`` / ``HGTLoader`` would do the sampling but need pyg-lib
or torch-sparse, which have no wheels here.
"""

from __future__ import annotations

import weakref
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


class _InEdges:
    """One relation's edges sorted by destination: the in-edges of any set of nodes without scanning the graph."""

    def __init__(self, edge_index: Tensor, num_dst: int) -> None:
        self.order = torch.argsort(edge_index[1], stable=True)
        self.ptr = torch.zeros(num_dst + 1, dtype=torch.long, device=edge_index.device)
        self.ptr[1:] = torch.bincount(edge_index[1], minlength=num_dst).cumsum(0)

    def of(self, nodes: Tensor, limit: int | None) -> Tensor:
        """Edge ids (columns of the relation's edge_index) into ``nodes``; at most ``limit`` random ones per node."""
        start, degree = self.ptr[nodes], self.ptr[nodes + 1] - self.ptr[nodes]
        first = degree.cumsum(0) - degree  # where each node's run starts among the gathered edges
        total = int(degree.sum())
        rank = torch.arange(total, device=nodes.device) - torch.repeat_interleave(first, degree, output_size=total)
        position = torch.repeat_interleave(start, degree, output_size=total) + rank
        if limit is not None and total and int(degree.max()) > limit:
            group = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), degree, output_size=total)
            shuffled = torch.argsort(group.double() + torch.rand(total, dtype=torch.double, device=nodes.device))
            position = position[shuffled][rank < limit]  # groups stay contiguous, so ``rank`` still holds
        return self.order[position]


# id(edge_index) -> (weak reference to it, its index): tensors compare elementwise, so they cannot be dict keys
_INDEX: dict[int, tuple[weakref.ref, _InEdges]] = {}


def _in_edges(edge_index: Tensor, num_dst: int) -> _InEdges:
    """The cached destination index of a knowledge relation (the graph's tensors are shared by every batch)."""
    key = id(edge_index)
    hit = _INDEX.get(key)
    if hit is None or hit[0]() is not edge_index:
        hit = _INDEX[key] = (
            weakref.ref(edge_index, lambda _, key=key: _INDEX.pop(key, None)),
            _InEdges(edge_index, num_dst),
        )
    return hit[1]


def _is_knowledge(edge_type: EdgeType) -> bool:
    return edge_type[0] in KNOWLEDGE_TYPES and edge_type[2] in KNOWLEDGE_TYPES


def _walk(
    batch: HeteroData, plan: Plan, seeds: Mapping[str, Tensor], num_neighbors: int | None
) -> tuple[dict[str, Tensor], dict[EdgeType, Tensor]]:
    """Node masks of the receptive field, and the knowledge edges kept per relation (ids into its edge_index)."""
    device = batch[PATIENT].y.device
    needed = {t: torch.zeros(int(batch[t].num_nodes), dtype=torch.bool, device=device) for t in batch.node_types}
    for t, index in seeds.items():
        needed[t][index] = True
    kept: dict[EdgeType, list[Tensor]] = {}
    expanded: dict[EdgeType, Tensor] = {}  # per knowledge relation: destinations whose in-edges are already kept
    for _, edges in reversed(list(plan)):
        grown = {t: mask.clone() for t, mask in needed.items()}  # a node keeps its own state (residual)
        for et in edges:
            src, _, dst = et
            edge_index = batch[et].edge_index
            if not edge_index.numel():
                continue
            if not _is_knowledge(et):  # the batch's own evidence edges: few, all kept
                grown[src][edge_index[0][needed[dst][edge_index[1]]]] = True
                continue
            done = expanded.setdefault(et, torch.zeros_like(needed[dst]))
            new = needed[dst] & ~done
            if new.any():
                index = _in_edges(edge_index, int(batch[dst].num_nodes))
                kept.setdefault(et, []).append(index.of(new.nonzero().view(-1), num_neighbors))
                done |= new
            if et in kept:  # every kept edge leads into a node needed here (needed sets only grow backwards)
                grown[src][edge_index[0][torch.cat(kept[et])]] = True
        needed = grown
    return needed, {et: torch.cat(ids) for et, ids in kept.items()}


def receptive_field(batch: HeteroData, plan: Plan, seeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per node type, a bool mask of the nodes whose initial state can reach ``seeds`` through ``plan``.

    ``seeds`` maps node types to the indices read out after the last layer; ``plan`` lists per layer (first to
    last) the node types it reads and the edge types it passes messages along.
    """
    return _walk(batch, plan, seeds, None)[0]


def restrict(
    batch: HeteroData, plan: Plan, class_nodes: Tensor, num_neighbors: int | None = None
) -> tuple[HeteroData, Tensor]:
    """``batch`` cut to the receptive field of its patients and ``class_nodes``, and the class nodes' new indices.

    Patient and evidence nodes are kept whole (they are the batch); knowledge nodes keep their ``node_id`` (the
    index into the model's embedding tables), so the model runs on the result unchanged. With ``num_neighbors``
    each needed knowledge node keeps at most that many random in-edges per knowledge relation (training).
    """
    seeds = {PATIENT: torch.arange(int(batch[PATIENT].num_nodes)), CANCER: class_nodes}
    masks, kept = _walk(batch, plan, seeds, num_neighbors)
    sub, position = HeteroData(), {}
    for t in batch.node_types:
        store = batch[t]
        if t not in KNOWLEDGE_TYPES:
            for key, value in store.items():
                sub[t][key] = value
            continue
        index = masks[t].nonzero().view(-1)
        position[t] = torch.cumsum(masks[t].long(), 0) - 1
        for key, value in store.items():
            if key != "num_nodes":
                sub[t][key] = value[index] if isinstance(value, Tensor) and store.is_node_attr(key) else value
        sub[t].num_nodes = len(index)
    for et in batch.edge_types:
        src, _, dst = et
        store, edge_index = batch[et], batch[et].edge_index
        if _is_knowledge(et):
            columns = kept.get(et, edge_index.new_empty(0))
        elif src in position or dst in position:  # evidence <-> knowledge links of the kept knowledge nodes
            ends = [masks[t][i] if t in position else None for t, i in ((src, edge_index[0]), (dst, edge_index[1]))]
            columns = (ends[0] if ends[0] is not None else ends[1]).nonzero().view(-1)
        else:
            for key, value in store.items():
                sub[et][key] = value
            continue
        for key, value in store.items():
            if key != "edge_index":
                sub[et][key] = value[columns] if isinstance(value, Tensor) and store.is_edge_attr(key) else value
        cut = edge_index[:, columns]
        sub[et].edge_index = torch.stack(
            [position[src][cut[0]] if src in position else cut[0], position[dst][cut[1]] if dst in position else cut[1]]
        )
    return sub, position[CANCER][class_nodes]
