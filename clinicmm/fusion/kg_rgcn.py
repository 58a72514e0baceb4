"""Knowledge-graph fusion with R-GCN message passing: the :mod:`~clinicmm.fusion.kg_gnn` model with HGT swapped out.

Everything but the convolution is :class:`~clinicmm.fusion.kg_gnn.KGGNNFusion`'s: the same initial states (learned
knowledge-node embeddings, projected evidence, one learned patient vector), the same message plan (no
evidence -> knowledge messages, so a patient's logits never depend on its batch-mates; each layer only updates the
node types later layers read), the same residual + LayerNorm update, class scoring against the cancer-type nodes'
final states, ablation ``modality_weights`` and ``init_class_embeddings`` -- those methods are kg_gnn's own.

Each layer is an R-GCN in heterogeneous form: ``HeteroConv`` of one ``SAGEConv`` per relation, summed per
destination type. For node ``i`` that is ``sum_r (W_r mean_{j in N_r(i)} h_j + R_r h_i)``: the R-GCN update with
per-relation mean normalisation (the root terms add up to one self weight). ``RGCNConv`` is not used: it needs a
homogeneous copy of the batch (node types re-indexed into one id space), updates every node in every layer (no
pruning of the ~3.5k genes), and without pyg-lib's ``segment_matmul`` (absent here) it loops over relations anyway,
masking the whole edge list once per relation. ``HeteroConv`` works on the batch as it comes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from clinicmm.fusion.batch import check_dims
from clinicmm.fusion.kg_gnn import (  # _-prefixed: kg_gnn's validation and embedding helpers, shared on purpose
    CANCER,
    KNOWLEDGE_TYPES,
    EdgeType,
    KGGNNFusion,
    Metadata,
    _check_class_nodes,
    _check_int,
    _check_metadata,
    _embeddings,
    _updated,
    message_plan,
)
from clinicmm.fusion.single import check_head_args
from clinicmm.keys import EVIDENCE_NODE, MODALITIES


class KGRGCNFusion(nn.Module):
    """R-GCN fusion on the knowledge graph; classes are scored against the cancer-type nodes' graph states."""

    def __init__(self, dims: Mapping[str, int], n_classes: int, num_nodes: Mapping[str, int], class_nodes: Tensor,
                 metadata: Metadata, hidden: int = 64, layers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        dims = check_dims(dims)
        check_head_args(n_classes, hidden, dropout)
        counts = {t: _check_int(f"num_nodes[{t!r}]", dict(num_nodes).get(t), 1) for t in KNOWLEDGE_TYPES}
        layers = _check_int("layers", layers, 1)
        self.register_buffer("class_nodes", _check_class_nodes(class_nodes, n_classes, counts[CANCER]))
        self.plan = message_plan(_check_metadata(metadata), layers)
        self.hidden = hidden
        self.evidence = nn.ModuleDict({EVIDENCE_NODE[m].value: nn.Sequential(nn.LayerNorm(dims[m.value]),
                                       nn.Linear(dims[m.value], hidden)) for m in MODALITIES})
        self.embeddings = _embeddings(counts, hidden)
        self.patient = nn.Parameter(torch.randn(hidden) * 0.1)
        self.convs = nn.ModuleList(_conv(hidden, edges) for _, edges in self.plan)
        self.norms = nn.ModuleList(nn.ModuleDict({t: nn.LayerNorm(hidden) for t in _updated(edges)})
                                   for _, edges in self.plan)
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden, hidden)
        self.bias = nn.Parameter(torch.zeros(n_classes))

    # The attributes above mirror KGGNNFusion's, so its methods apply unchanged (the conv is called the same way).
    _initial = KGGNNFusion._initial
    forward = KGGNNFusion.forward
    modality_weights = KGGNNFusion.modality_weights
    init_class_embeddings = KGGNNFusion.init_class_embeddings

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, layers={len(self.plan)}"


def _conv(hidden: int, edges: list[EdgeType]) -> nn.Module:
    """One R-GCN layer: a ``SAGEConv`` (mean) per relation in ``edges``, summed per destination node type."""
    from torch_geometric.nn import HeteroConv, SAGEConv

    with warnings.catch_warnings():  # source-only types (e.g. genes in the last layer) are left out on purpose
        warnings.filterwarnings("ignore", message=".*do not get updated during message passing.*")
        return HeteroConv({et: SAGEConv((hidden, hidden), hidden) for et in edges}, aggr="sum")
