"""Knowledge-pooled fusion: the omics features pooled over the graph's pathways and cancer-type gene sets.

On real cohorts (and in the demo) tumours of one type deregulate the same pathways through *different* genes, so
a per-gene model sees sparse, patient-specific signals, and on a few hundred patients it cannot learn which of
thousands of genes belong together. The knowledge graph knows: every gene ``member_of`` pathway edge and every
gene ``driver_of`` cancer-type edge defines a gene set. This model pools each patient's omics features over those
sets, as the pathway layer of a biologically informed network (P-NET, Elmarakeby et al., Nature 2021) does with
fixed, not learned, membership:

* for each gene set ``S`` with at least :data:`MIN_MEMBERS` features linked to its genes, over the ``n`` of its
  expression z-scores the patient has (a gene its panel did not measure comes imputed from the genes it did,
  :meth:`~clinicmm.encode.genomics.GenomicsPreprocessor.zscores`, and counts; a z of exactly 0, the training mean
  of a patient without any measured value or of ``impute_components: 0``, is left out),
  ``up = (sum relu(z) - 0.399 n) / (0.583 sqrt(n))`` and ``down`` the same on ``relu(-z)`` (centred and scaled
  so a set of unchanged genes is ~N(0, 1) whatever its size: 0.399 and 0.583 are the mean and sd of relu of a
  standard normal; 0 when ``n`` is 0), and ``mutated = (number of mutated members) / sqrt(n_mutation_members)``;
* those 3 x (sets) values are one more view of the patient, encoded like the other modalities
  (:class:`~clinicmm.fusion.models.single.ModalityEncoder`, learned 'missing' vector without omics) and
  concatenated with the image, note and raw omics encodings and the presence mask, as :class:`ConcatFusion` does.

So it is ``concat`` plus the knowledge: on a degree-preserving rewired graph (``compare.knowledge_ablation``) the
sets are random gene sets of the same sizes, and the difference to this model on the real graph is what the
biology adds. Which features link to which genes comes from the fitted genomics preprocessor (``omics_genes``: the
gene node index of each omics feature, -1 for none; :func:`clinicmm.training.data.omics_gene_index`), so the
served model rebuilds the same sets from its bundle; the sets are buffers, not weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import PATIENT, check_dims
from clinicmm.fusion.models.linear import LinearFusion
from clinicmm.fusion.models.single import MODALITY_NAMES, ModalityEncoder, check_head_args, mlp_head, present_share
from clinicmm.keys import Node, Rel

OMICS = MODALITY_NAMES.index("omics")
MIN_MEMBERS = 3  # a gene set pools at least this many measured features (smaller ones are left out)
RELU_MEAN, RELU_SD = 0.3989, 0.5827  # mean and sd of max(Z, 0) for Z ~ N(0, 1)
# the pooling as a dense (features, sets) product when that matrix is small and at least 1 / DENSE_SHARE filled
DENSE_MAX, DENSE_SHARE = 2_000_000, 8
SET_RELATIONS = ((Node.GENE.value, Rel.MEMBER_OF.value, Node.PATHWAY.value),
                 (Node.GENE.value, Rel.DRIVER_OF.value, Node.CANCER.value))  # fmt: skip


def gene_sets(knowledge: HeteroData, omics_genes: Sequence[int], n_expression: int) -> dict[str, Tensor]:
    """The pooling index: per (feature, set) membership pair, the feature's column (``feature``) and the set's
    number (``set``); per set, its node (``node``: index among the nodes of its type) and which of
    :data:`SET_RELATIONS` defines it (``relation``).

    ``omics_genes``: gene node index per omics feature (-1: links no gene), or a list of them for a feature that
    stands for several genes (a copy-number arm or band, :mod:`clinicmm.ingest.cytobands`: it is a member of a set
    once per gene of the set it covers, so a set's pooled value weighs it by those genes); the first
    ``n_expression`` features are expression z-scores, the rest 0/1 mutation flags. Sets are the pathways and
    cancer types of :data:`SET_RELATIONS` with at least :data:`MIN_MEMBERS` member genes, in node order.
    """
    pair_feature, pair_gene = [], []  # one (feature, gene) pair per gene a feature names
    for j, entry in enumerate(omics_genes):
        for gene in entry if isinstance(entry, (list, tuple)) else (entry,):
            pair_feature.append(j)
            pair_gene.append(int(gene))
    pair_feature = torch.as_tensor(pair_feature, dtype=torch.long)
    genes = torch.as_tensor(pair_gene, dtype=torch.long)
    features, sets, nodes, relations, offset = [], [], [], [], 0
    for r, edge_type in enumerate(SET_RELATIONS):
        if edge_type not in knowledge.edge_types:
            continue
        num_sets = int(knowledge[edge_type[2]].num_nodes)
        edges = knowledge[edge_type].edge_index  # (2, E): gene -> set
        num_genes = int(knowledge[Node.GENE.value].num_nodes)
        if not edges.numel() or not num_sets:
            continue
        # membership of each feature: the edges whose source is the feature's gene
        member = torch.zeros(num_genes + 1, num_sets, dtype=torch.bool)  # row num_genes: "no gene"
        member[edges[0], edges[1]] = True
        feature_rows = torch.where(genes >= 0, genes, torch.full_like(genes, num_genes))
        pair, s = member[feature_rows].nonzero(as_tuple=True)
        keep = torch.bincount(s, minlength=num_sets) >= MIN_MEMBERS
        renumber = torch.cumsum(keep.long(), 0) - 1
        chosen = keep[s]
        features.append(pair_feature[pair[chosen]])
        sets.append(renumber[s[chosen]] + offset)
        nodes.append(keep.nonzero().view(-1))
        relations.append(torch.full((int(keep.sum()),), r, dtype=torch.long))
        offset += int(keep.sum())
    empty = torch.zeros(0, dtype=torch.long)
    return {
        "feature": torch.cat(features) if features else empty,
        "set": torch.cat(sets) if sets else empty,
        "num_sets": torch.tensor(offset),
        "node": torch.cat(nodes) if nodes else empty,
        "relation": torch.cat(relations) if relations else empty,
    }


class GeneSetPooling(nn.Module):
    """``(B, features) -> (B, 3 x sets)``: each patient's omics features pooled over the graph's gene sets
    (module doc). No weights: the sets are buffers rebuilt from the graph and the fitted preprocessor."""

    def __init__(self, knowledge: HeteroData, omics_genes: Sequence[int] | None, n_expression: int | None, dim: int):
        super().__init__()
        omics_genes = list(omics_genes) if omics_genes is not None else []
        if omics_genes and len(omics_genes) != dim:
            raise ValueError(f"Expected one gene index per omics feature ({dim}), got {len(omics_genes)}")
        n_expression = len(omics_genes) if n_expression is None else int(n_expression)
        index = gene_sets(knowledge, omics_genes, n_expression)
        self.num_sets = int(index["num_sets"])
        mutation_count = torch.bincount(index["set"][index["feature"] >= n_expression], minlength=self.num_sets)
        self.register_buffer("mutation_count", mutation_count.float(), persistent=False)
        self.register_buffer("set_node", index["node"], persistent=False)  # each set's node, among its type's
        self.register_buffer("set_relation", index["relation"], persistent=False)  # index into SET_RELATIONS
        # a region (a copy-number arm) is a member of a set once per gene of the set it covers: each distinct
        # (feature, set) pair is kept once with that count as its weight, the same sums over fewer pairs
        pairs, weight = torch.unique(torch.stack([index["feature"], index["set"]]), dim=1, return_counts=True)
        self.pairs = int(weight.sum())
        if dim * self.num_sets <= DENSE_MAX and pairs.size(1) * DENSE_SHARE >= dim * self.num_sets:
            # few features in many sets (arms): the pooling is a matrix product with (features, sets) weights
            dense = torch.zeros(dim, self.num_sets)
            dense[pairs[0], pairs[1]] = weight.float()
            self.register_buffer("dense", dense, persistent=False)
            self.register_buffer("is_expression", torch.arange(dim) < n_expression, persistent=False)  # per row
        else:
            self.dense = None
            self.register_buffer("set_feature", pairs[0], persistent=False)
            self.register_buffer("set_index", pairs[1], persistent=False)
            self.register_buffer("pair_weight", weight.float(), persistent=False)
            self.register_buffer("is_expression", pairs[0] < n_expression, persistent=False)  # per pair

    @property
    def dim(self) -> int:
        """Width of the pooled view (0 when no set has enough measured members)."""
        return 3 * self.num_sets

    def forward(self, omics: Tensor) -> Tensor:
        """(B, 3 x sets): per gene set, [up, down, mutated] of each patient's omics features (module doc)."""
        if not self.num_sets:  # no gene set has enough measured members: nothing to pool
            return omics.new_zeros(omics.size(0), 0)
        # a member counts where it has a value: a z-score of exactly 0 is the training mean of a gene nobody imputed
        # (impute_components: 0), so such a patient pools the members it has, centred and scaled by how many
        parts = (omics != 0).to(omics), omics.clamp_min(0.0), (-omics).clamp_min(0.0), omics.clamp(0.0, 1.0)
        if self.dense is not None:  # a feature's row is either an expression (region) row or a mutation row
            weights, expr = self.dense.to(omics), self.is_expression.to(omics)
            measured, up, down = ((part * expr) @ weights for part in parts[:3])
            mutated = (parts[3] * (1.0 - expr)) @ weights
        else:
            expr, weight = self.is_expression, self.pair_weight.to(omics)

            def pool(part: Tensor, rows: Tensor) -> Tensor:
                total = omics.new_zeros(omics.size(0), self.num_sets)
                return total.index_add_(1, self.set_index[rows], part[:, self.set_feature[rows]] * weight[rows])

            measured, up, down = (pool(part, expr) for part in parts[:3])
            mutated = pool(parts[3], ~expr)
        m = measured.clamp_min(1.0)
        out = [torch.where(measured > 0, (total - RELU_MEAN * m) / (RELU_SD * m.sqrt()), 0.0) for total in (up, down)]
        out.append(mutated / self.mutation_count.clamp_min(1.0).sqrt())
        return torch.cat(out, dim=1)

    def extra_repr(self) -> str:
        return f"gene_sets={self.num_sets}, pooled_pairs={self.pairs}"


class KGPathwayFusion(nn.Module):
    """Concatenation fusion plus the omics pooled over the knowledge graph's gene sets (see the module doc)."""

    def __init__(
        self,
        dims: Mapping[str, int],
        n_classes: int,
        knowledge: HeteroData,
        omics_genes: Sequence[int] | None,
        n_expression: int | None = None,
        hidden: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        dims = check_dims(dims)
        check_head_args(n_classes, hidden, dropout)
        self.pool = GeneSetPooling(knowledge, omics_genes, n_expression, dims["omics"])
        self.encoders = nn.ModuleDict({m: ModalityEncoder(dims[m], hidden) for m in MODALITY_NAMES})
        # without gene sets (no omics, or none of its genes in a set) this is concat: no pooled input to encode
        self.pathways = ModalityEncoder(self.pool.dim, hidden) if self.pool.dim else None
        n = len(MODALITY_NAMES)
        self.head = mlp_head((n + bool(self.pathways)) * hidden + n, hidden, n_classes, dropout)

    @property
    def num_sets(self) -> int:
        return self.pool.num_sets

    def pooled(self, omics: Tensor) -> Tensor:
        return self.pool(omics)

    def forward(self, batch: HeteroData) -> Tensor:
        """(B, n_classes) logits."""
        store = batch[PATIENT]
        parts = [self.encoders[m](store[f"x_{m}"], store.present[:, i]) for i, m in enumerate(MODALITY_NAMES)]
        if self.pathways is not None:
            parts.append(self.pathways(self.pool(store.x_omics), store.present[:, OMICS]))
        return self.head(torch.cat([*parts, store.present.float()], dim=1))

    def modality_weights(self, batch: HeteroData) -> Tensor:
        """(B, 3): equal share over the modalities the patient has (no per-patient attribution)."""
        return present_share(batch)


class KGLinearFusion(LinearFusion):
    """Logistic regression on ``[x_image, x_note, x_omics, present]`` plus the pooled gene-set view (zeros without
    omics): ``logreg`` with the knowledge graph's gene sets, fitted in closed form the same way
    (:mod:`clinicmm.training.linear`), so on a small cohort the biology can help the model that is hardest to beat."""

    def __init__(
        self,
        dims: Mapping[str, int],
        n_classes: int,
        knowledge: HeteroData,
        omics_genes: Sequence[int] | None,
        n_expression: int | None = None,
        hidden: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(dims, n_classes, hidden=hidden, dropout=dropout)
        self.pool = GeneSetPooling(knowledge, omics_genes, n_expression, check_dims(dims)["omics"])
        self.linear = nn.Linear(self.linear.in_features + self.pool.dim, n_classes)

    def features(self, batch: HeteroData) -> Tensor:
        """(B, sum of dims + 3 + pooled): :meth:`LinearFusion.features` and the pooled view of present omics."""
        store = batch[PATIENT]
        pooled = self.pool(store.x_omics) * store.present[:, OMICS : OMICS + 1]
        return torch.cat([LinearFusion.features(batch), pooled], dim=1)
