"""The fusion models by name (:class:`clinicmm.keys.Model`, the names the config allows), built from one uniform signature.

Every factory takes one :class:`ModelInputs` (embedding widths, classes, graph, class nodes, hyper-parameters, the
omics features' gene nodes); a model takes what it uses. Model modules are imported when a model is built, so importing
this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

from clinicmm.errors import ModelError
from clinicmm.keys import Model

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch_geometric.data import HeteroData


@dataclass(frozen=True)
class ModelInputs:
    """What every factory is given: the embedding widths, the classes and the graph, the hyper-parameters, and the
    gene node of each omics feature (-1 for none; the first ``n_expression`` are expression z-scores) for the
    models that pool over gene sets. A model takes what it uses."""

    dims: Mapping[str, int]
    n_classes: int
    knowledge: HeteroData
    class_nodes: Tensor
    hidden: int = 64
    dropout: float = 0.2
    omics_genes: Sequence[int] | None = None
    n_expression: int | None = None


Factory = Callable[[ModelInputs], "nn.Module"]


def _single(modality: str) -> Factory:
    def build(a: ModelInputs) -> nn.Module:
        from clinicmm.fusion.models.single import SingleModalityModel

        return SingleModalityModel(modality, a.dims, a.n_classes, hidden=a.hidden, dropout=a.dropout)

    build.__doc__ = f"Single-modality model on the {modality} embedding."
    return build


def _dense(module: str, name: str, doc: str) -> Factory:
    """Factory of a model on the dense per-patient views (no graph): ``clinicmm.fusion.models.<module>.<name>``."""

    def build(a: ModelInputs) -> nn.Module:
        cls = getattr(import_module(f"clinicmm.fusion.models.{module}"), name)
        return cls(a.dims, a.n_classes, hidden=a.hidden, dropout=a.dropout)

    build.__doc__ = doc
    return build


def _graph(model: str) -> Factory:
    """Factory of a knowledge-graph fusion model; node counts come from ``knowledge``, metadata from the schema."""

    def build(a: ModelInputs) -> nn.Module:
        from clinicmm.fusion.batch import check_knowledge, schema
        from clinicmm.fusion.models.kg_gnn import KNOWLEDGE_TYPES, KGGNNFusion
        from clinicmm.fusion.models.kg_rgcn import KGRGCNFusion

        check_knowledge(a.knowledge)
        num_nodes = {t: int(a.knowledge[t].num_nodes) for t in KNOWLEDGE_TYPES}
        cls = {"hgt": KGGNNFusion, "rgcn": KGRGCNFusion}[model]
        return cls(
            a.dims,
            a.n_classes,
            num_nodes,
            a.class_nodes,
            schema(a.dims),
            hidden=a.hidden,
            dropout=a.dropout,
            knowledge=a.knowledge,  # with omics_genes (training.gene_set_input): the gene-set read-in
            omics_genes=a.omics_genes,
            n_expression=a.n_expression,
        )

    build.__doc__ = f"{model.upper()} fusion on the knowledge graph."
    return build


def _pooled(name: str, doc: str) -> Factory:
    """Factory of a model that pools the omics features over the graph's gene sets
    (``clinicmm.fusion.models.kg_pathway.<name>``)."""

    def build(a: ModelInputs) -> nn.Module:
        from clinicmm.fusion.batch import check_knowledge
        from clinicmm.fusion.models import kg_pathway

        check_knowledge(a.knowledge)
        cls = getattr(kg_pathway, name)
        return cls(a.dims, a.n_classes, a.knowledge, a.omics_genes, a.n_expression, hidden=a.hidden, dropout=a.dropout)

    build.__doc__ = doc
    return build


MODELS: dict[Model, Factory] = {
    Model.IMAGE: _single("image"),
    Model.NOTE: _single("note"),
    Model.OMICS: _single("omics"),
    Model.CONCAT: _dense("concat", "ConcatFusion", "Concatenation fusion of the three modality embeddings."),
    Model.KG_GNN: _graph("hgt"),
    Model.ATTENTION: _dense("attention", "AttentionFusion", "Attention-weighted fusion of the modality embeddings."),
    Model.KG_RGCN: _graph("rgcn"),
    Model.LOGREG: _dense("linear", "LinearFusion", "Logistic regression on the embeddings (closed-form fit)."),
    Model.GBT: _dense("trees", "TreeFusion", "Gradient-boosted trees on the embeddings (fitted by scikit-learn)."),
    Model.KG_PATHWAY: _pooled(
        "KGPathwayFusion", "Concatenation fusion plus the omics pooled over the graph's gene sets."
    ),
    Model.KG_LOGREG: _pooled("KGLinearFusion", "Logistic regression plus the omics pooled over the graph's gene sets."),
}


# fitted without gradient steps or early stopping on the validation rows (training.linear, training.trees)
CLOSED_FORM = frozenset({Model.LOGREG, Model.GBT, Model.KG_LOGREG})
# pool the omics over the graph's gene sets: built with the omics features' gene nodes (ModelInputs.omics_genes)
POOLED = frozenset({Model.KG_PATHWAY, Model.KG_LOGREG})
# graph networks that also read the pooled gene sets with training.gene_set_input (GeneSetReadIn)
READS_GENE_SETS = frozenset({Model.KG_GNN, Model.KG_RGCN})
SINGLE_MODALITY = frozenset({Model.IMAGE, Model.NOTE, Model.OMICS})  # the per-modality references


def pools_gene_sets(name: str, gene_set_input: bool) -> bool:
    """Whether model ``name`` is built with the omics features' gene nodes: the knowledge-pooled models always, the
    graph networks with ``training.gene_set_input``."""
    return name in POOLED or (gene_set_input and name in READS_GENE_SETS)


def corrects_logreg(name: str, offset: str) -> bool:
    """Whether ``training.offset`` makes model ``name`` a correction of the logistic regression
    (:class:`~clinicmm.fusion.models.wrappers.LinearOffset`): the fusion networks do; closed-form models and the
    single-modality references do not, nor does a name that is no model (a report's ``champion`` row)."""
    return offset == "logreg" and name in MODELS and name not in CLOSED_FORM | SINGLE_MODALITY


def build_model(
    name: str,
    dims: Mapping[str, int],
    n_classes: int,
    knowledge: HeteroData,
    class_nodes: Tensor,
    hidden: int = 64,
    dropout: float = 0.2,
    omics_genes: Sequence[int] | None = None,
    n_expression: int | None = None,
) -> nn.Module:
    """Build the model registered as ``name``; ``ModelError`` lists the valid names for an unknown one."""
    if name not in MODELS:
        raise ModelError(f"Unknown fusion model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name](
        ModelInputs(dims, n_classes, knowledge, class_nodes, hidden, dropout, omics_genes, n_expression)
    )
