"""Knowledge-graph fusion with R-GCN message passing: the :mod:`~clinicmm.fusion.models.kg_gnn` model with HGT swapped out.

Everything but the convolution is :class:`~clinicmm.fusion.models.kg_gnn.KGGNNFusion`'s: the same initial states (learned
knowledge-node embeddings, projected evidence, one learned patient vector), the same message plan (no
evidence -> knowledge messages, so a patient's logits never depend on its batch-mates; each layer only updates the
node types later layers read), the same residual + LayerNorm update, class scoring against the cancer-type nodes'
final states, ablation ``modality_weights``, ``init_class_embeddings``, the gene-set read-in
(``training.gene_set_input``) and the receptive-field batches of a large graph (:mod:`~clinicmm.fusion.subgraph`):
it subclasses KGGNNFusion and overrides only ``_make_conv``.

Each layer is an R-GCN in heterogeneous form: ``HeteroConv`` of one ``SAGEConv`` per relation, summed per
destination type. For node ``i`` that is ``sum_r (W_r mean_{j in N_r(i)} h_j + R_r h_i)``: the R-GCN update with
per-relation mean normalisation (the root terms add up to one self weight). ``RGCNConv`` is not used: it needs a
homogeneous copy of the batch (node types re-indexed into one id space), updates every node in every layer (no
pruning of the ~3.5k genes), and without pyg-lib's ``segment_matmul`` (absent here) it loops over relations anyway,
masking the whole edge list once per relation. ``HeteroConv`` works on the batch as it comes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.fusion.models.kg_gnn import SUBGRAPH_MIN_EDGES, EdgeType, KGGNNFusion, Metadata


class KGRGCNFusion(KGGNNFusion):
    """R-GCN fusion on the knowledge graph; classes are scored against the cancer-type nodes' graph states."""

    def __init__(
        self,
        dims: Mapping[str, int],
        n_classes: int,
        num_nodes: Mapping[str, int],
        class_nodes: Tensor,
        metadata: Metadata,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.2,
        subgraph_min_edges: int | None = SUBGRAPH_MIN_EDGES,
        knowledge: HeteroData | None = None,
        omics_genes: Sequence[int] | None = None,
        n_expression: int | None = None,
    ) -> None:
        super().__init__(
            dims,
            n_classes,
            num_nodes,
            class_nodes,
            metadata,
            hidden=hidden,
            heads=1,
            layers=layers,
            dropout=dropout,
            subgraph_min_edges=subgraph_min_edges,
            knowledge=knowledge,
            omics_genes=omics_genes,
            n_expression=n_expression,
        )

    @staticmethod
    def _make_conv(hidden: int, heads: int, inputs: list[str], edges: list[EdgeType]) -> nn.Module:
        return _conv(hidden, edges)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, layers={len(self.plan)}"


def _conv(hidden: int, edges: list[EdgeType]) -> nn.Module:
    """One R-GCN layer: a ``SAGEConv`` (mean) per relation in ``edges``, summed per destination node type."""
    from torch_geometric.nn import HeteroConv, SAGEConv

    with warnings.catch_warnings():  # source-only types (e.g. genes in the last layer) are left out on purpose
        warnings.filterwarnings("ignore", message=".*do not get updated during message passing.*")
        return HeteroConv({et: SAGEConv((hidden, hidden), hidden) for et in edges}, aggr="sum")
