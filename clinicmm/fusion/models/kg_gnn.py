"""Knowledge-graph fusion: HGT message passing over the knowledge graph plus the batch's patient/evidence nodes.

Initial states: evidence nodes project their modality embedding (LayerNorm + Linear); knowledge nodes (genes,
pathways, cancer types, concepts) have learned embeddings looked up by ``node_id``; patients start from one learned
vector. ``layers`` rounds of HGT (:class:`~clinicmm.fusion.conv.hgt.HGTLayer`, the arithmetic and parameters of PyG's
``HGTConv`` with fewer operations; residual + LayerNorm + dropout) follow, and a patient's logit for class
``c`` is its projected state dotted with the final state of the cancer-type node ``class_nodes[c]``, plus a bias.

With ``omics_genes`` (``training.gene_set_input``, the default) the patient's starting state also reads its omics
pooled over the graph's gene sets through those sets' node embeddings (:class:`GeneSetReadIn`): measured, the
trained networks ignore which genes their omics evidence links to (``benchmarks/link_influence.py``), and this is
the path by which the pathways a patient alters reach its prediction.

Two choices keep the model honest and cheap:

* Messages never flow from evidence into the knowledge graph (``altered``/``mentions``/``shows`` are dropped, their
  ``rev_`` twins kept). Knowledge states therefore depend on the graph alone, and a patient's logits depend only on
  that patient's own evidence, never on who else is in the batch.
* Each layer only updates the node types the following layers read (pruned backwards from patient and
  cancer-type), so the last layer skips the ~3.5k genes and no parameter sits unused.

When the knowledge graph holds at least ``subgraph_min_edges`` edges, each batch is first cut to the receptive field
of its patients and class nodes (:mod:`clinicmm.fusion.subgraph`): the same logits, at a cost that grows with the
batch rather than with the graph. In training, ``num_neighbors`` then bounds the in-edges each knowledge node keeps
per relation (neighbour sampling, drawn again for every batch); evaluation always uses every edge.

``modality_weights`` is attribution by ablation: each modality's evidence is removed for everyone, and the drop of
the predicted class's log-probability, normalised over modalities, is that modality's share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.config import TrainingSpec
from clinicmm.fusion.batch import PATIENT, check_dims, schema, without_modality
from clinicmm.fusion.models.kg_pathway import OMICS, SET_RELATIONS, GeneSetPooling
from clinicmm.fusion.models.single import MODALITY_NAMES, check_head_args, present_share
from clinicmm.fusion.subgraph import knowledge_edges, restrict
from clinicmm.keys import EVIDENCE_NODE, KNOWLEDGE_NODES, MODALITIES, Node

EdgeType = tuple[str, str, str]
CANCER = Node.CANCER.value
KNOWLEDGE_TYPES: tuple[str, ...] = tuple(t.value for t in KNOWLEDGE_NODES)
EVIDENCE_TYPES: tuple[str, ...] = tuple(EVIDENCE_NODE[m].value for m in MODALITIES)
# Gene, pathway and concept embeddings start small, so early on such a node's state is mostly what its neighbours
# tell it (a gene few patients carry still inherits its cancer types' and pathways' signal) rather than its own
# random identity; cancer-type nodes are the class prototypes and start at unit scale, distinct from each other.
CONTEXT_STD = 0.1
# knowledge edges (one direction) from which batches are cut to their receptive field: the config's default, which
# models built outside the fit (prediction, a registered bundle) keep; fit sets the workflow's value
SUBGRAPH_MIN_EDGES: int = TrainingSpec.model_fields["subgraph_min_edges"].default
Metadata = tuple[Sequence[str], Sequence[EdgeType]]


def message_plan(metadata: Metadata, layers: int) -> list[tuple[list[str], list[EdgeType]]]:
    """Per layer, the node types it reads and the edge types it passes messages along.

    Evidence -> knowledge edges are never used; from the last layer backwards, a layer keeps only the edges into
    node types that a later layer (or the read-out: patient, cancer_type) needs.
    """
    node_types, edge_types = list(metadata[0]), [tuple(et) for et in metadata[1]]
    usable = [et for et in edge_types if not (et[0] in EVIDENCE_TYPES and et[2] in KNOWLEDGE_TYPES)]
    needed, plan = {PATIENT, CANCER}, []
    for _ in range(layers):
        edges = [et for et in usable if et[2] in needed]
        needed = needed | {et[0] for et in edges}
        plan.append(([t for t in node_types if t in needed], edges))
    return plan[::-1]


def _check_metadata(metadata: object) -> tuple[list[str], list[EdgeType]]:
    required = schema()[0]
    try:
        node_types, edge_types = list(metadata[0]), [tuple(et) for et in metadata[1]]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        raise ValueError(
            f"Expected metadata (node_types, edge_types) as from fusion.batch.schema (got {metadata!r})"
        ) from None
    missing = [t for t in required if t not in node_types]
    dangling = [et for et in edge_types if len(et) != 3 or et[0] not in node_types or et[2] not in node_types]
    if missing or dangling:
        raise ValueError(
            f"Expected metadata with node types {required} and edges between them "
            f"(got missing node types {missing}, dangling edge types {dangling})"
        )
    return node_types, edge_types


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"Expected {name} to be an int >= {low} (got {value!r})")
    return int(value)


def _check_class_nodes(class_nodes: object, n_classes: int, num_cancer: int) -> Tensor:
    ok = isinstance(class_nodes, Tensor) and class_nodes.dim() == 1 and not class_nodes.is_floating_point()
    if not ok or class_nodes.numel() != n_classes:  # type: ignore[union-attr]
        raise ValueError(
            f"Expected class_nodes a 1-D integer tensor of length n_classes={n_classes} (got {class_nodes!r})"
        )
    nodes = class_nodes.long().cpu()  # type: ignore[union-attr]
    if nodes.unique().numel() != n_classes or int(nodes.min()) < 0 or int(nodes.max()) >= num_cancer:
        raise ValueError(
            f"Expected class_nodes distinct cancer_type node indices in [0, {num_cancer}) (got {nodes.tolist()})"
        )
    return nodes


class KGGNNFusion(nn.Module):
    """HGT fusion on the knowledge graph; classes are scored against the cancer-type nodes' graph states."""

    def __init__(
        self,
        dims: Mapping[str, int],
        n_classes: int,
        num_nodes: Mapping[str, int],
        class_nodes: Tensor,
        metadata: Metadata,
        hidden: int = 64,
        heads: int = 2,
        layers: int = 2,
        dropout: float = 0.2,
        subgraph_min_edges: int | None = SUBGRAPH_MIN_EDGES,
        num_neighbors: int | None = None,
        knowledge: HeteroData | None = None,
        omics_genes: Sequence[int] | None = None,
        n_expression: int | None = None,
    ) -> None:
        super().__init__()
        dims = check_dims(dims)
        check_head_args(n_classes, hidden, dropout)
        counts = {t: _check_int(f"num_nodes[{t!r}]", dict(num_nodes).get(t), 1) for t in KNOWLEDGE_TYPES}
        heads, layers = _check_int("heads", heads, 1), _check_int("layers", layers, 1)
        if hidden % heads:
            raise ValueError(f"Expected hidden divisible by heads (got hidden={hidden}, heads={heads})")
        self.register_buffer("class_nodes", _check_class_nodes(class_nodes, n_classes, counts[CANCER]))
        self.plan = message_plan(_check_metadata(metadata), layers)
        self.hidden = hidden
        self.evidence = nn.ModuleDict(
            {
                EVIDENCE_NODE[m].value: nn.Sequential(nn.LayerNorm(dims[m.value]), nn.Linear(dims[m.value], hidden))
                for m in MODALITIES
            }
        )
        self.embeddings = _embeddings(counts, hidden)
        self.patient = nn.Parameter(torch.randn(hidden) * 0.1)
        # training.gene_set_input: the omics pooled over the graph's gene sets, read through the sets' node embeddings
        # (registered before the read-out: the offset's zero_output zeroes the last linear layer, the read-out)
        read_in = None
        if knowledge is not None and omics_genes is not None:
            read_in = GeneSetReadIn(knowledge, omics_genes, n_expression, dims["omics"], hidden)
        self.gene_sets = read_in if read_in is not None and read_in.num_sets else None
        self.convs = nn.ModuleList(self._make_conv(hidden, heads, inputs, edges) for inputs, edges in self.plan)
        self.norms = nn.ModuleList(
            nn.ModuleDict({t: nn.LayerNorm(hidden) for t in _updated(edges)}) for _, edges in self.plan
        )
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden, hidden)
        self.bias = nn.Parameter(torch.zeros(n_classes))
        self.subgraph_min_edges = subgraph_min_edges  # None: always the whole graph
        self.num_neighbors = num_neighbors  # in training, on cut batches: in-edges sampled per node and relation

    @staticmethod
    def _make_conv(hidden: int, heads: int, inputs: list[str], edges: list[EdgeType]) -> nn.Module:
        """One message-passing layer over ``edges`` (subclasses swap the operator; everything else is shared)."""
        return _conv(hidden, heads, inputs, edges)

    def _initial(self, batch: HeteroData) -> dict[str, Tensor]:
        """Starting state of every node type the first layer reads."""
        states = {}
        for t in self.plan[0][0]:
            if t in self.embeddings:
                states[t] = self.embeddings[t](batch[t].node_id)
            elif t in self.evidence:
                states[t] = self.evidence[t](batch[t].x)
            else:
                states[t] = self.patient.expand(batch[PATIENT].num_nodes, -1)
        if self.gene_sets is not None:
            store = batch[PATIENT]
            removed = store.removed_sets if "removed_sets" in store else None  # set by explanations, per batch
            read = self.gene_sets(store.x_omics, store.present[:, OMICS], self.embeddings, removed)
            states[PATIENT] = states[PATIENT] + read
        return states

    def forward(self, batch: HeteroData) -> Tensor:
        """(B, n_classes) logits."""
        class_nodes = self.class_nodes
        if self.subgraph_min_edges is not None and knowledge_edges(batch) >= self.subgraph_min_edges:
            batch, class_nodes = restrict(batch, self.plan, class_nodes, self.num_neighbors if self.training else None)
        h = self._initial(batch)
        for conv, norms, (inputs, edges) in zip(self.convs, self.norms, self.plan):
            out = conv({t: h[t] for t in inputs}, {et: batch[et].edge_index for et in edges})
            h.update({t: norms[t](h[t] + self.dropout(o)) for t, o in out.items()})
        classes = h[CANCER][class_nodes]
        return self.readout(self.dropout(h[PATIENT])) @ classes.T / math.sqrt(self.hidden) + self.bias

    @torch.no_grad()
    def modality_weights(self, batch: HeteroData) -> Tensor:
        """(B, 3) share of each modality by ablation (eval mode; the training mode is restored).

        A modality's raw score is how much the predicted class's log-odds (:func:`log_odds`: unlike the
        log-probability it does not saturate for a confident prediction) changes when that modality's evidence node
        (and its links) is removed; scores are normalised per patient. A patient whose prediction no ablation moves
        gets an equal share over the modalities it has; one with none gets zeros.
        """
        was_training = self.training
        self.eval()
        try:
            logits = self(batch)
            pred = logits.argmax(1)
            full = log_odds(logits, pred)
            present = batch[PATIENT].present.float()
            change = (
                torch.stack(
                    [(full - log_odds(self(without_modality(batch, m)), pred)).abs() for m in MODALITY_NAMES], 1
                )
                * present
            )
        finally:
            self.train(was_training)
        total = change.sum(1, keepdim=True)
        return torch.where(total > 0, change / total.clamp_min(1e-12), present_share(batch))

    @torch.no_grad()
    def init_class_embeddings(self, vectors: Tensor, rows: Tensor | None = None) -> None:
        """Set cancer-type node embeddings (all, or ``rows``) from ``vectors`` (n, d), e.g. text embeddings.

        ``vectors`` are mapped to ``hidden`` by a fixed seeded Gaussian projection (identity when d == hidden),
        which keeps their relative geometry, and each row is scaled to unit RMS like the initialisation.
        """
        weight = self.embeddings[CANCER].weight
        rows = torch.arange(weight.size(0)) if rows is None else torch.as_tensor(rows).long().cpu()
        ok = isinstance(vectors, Tensor) and vectors.dim() == 2 and vectors.size(0) == rows.numel() > 0
        if not ok or not torch.isfinite(vectors).all():
            raise ValueError(
                f"Expected finite vectors of shape ({rows.numel()}, d) (got "
                f"{tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__})"
            )
        if rows.unique().numel() != rows.numel() or int(rows.min()) < 0 or int(rows.max()) >= weight.size(0):
            raise ValueError(f"Expected distinct rows in [0, {weight.size(0)}) (got {rows.tolist()})")
        projected = _project(vectors.detach().float().cpu(), self.hidden)
        weight[rows.to(weight.device)] = projected.to(weight.device, weight.dtype)

    @torch.no_grad()
    def init_node_embeddings(self, node_type: str, vectors: Tensor) -> int:
        """Start the ``node_type`` embeddings from ``vectors`` (n_nodes, hidden), e.g. :func:`structural_embedding`.

        Each nonzero row is rescaled to the RMS the random initialisation has (``CONTEXT_STD``; unit for cancer
        types), so only the directions change; a row of zeros (a node the source says nothing about) keeps its
        random start. Returns how many rows were set.
        """
        weight = self.embeddings[node_type].weight
        ok = isinstance(vectors, Tensor) and tuple(vectors.shape) == tuple(weight.shape)
        if not ok or not torch.isfinite(vectors).all():
            raise ValueError(
                f"Expected finite {node_type} vectors of shape {tuple(weight.shape)} (got "
                f"{tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__})"
            )
        vectors = vectors.detach().float().cpu()
        rows = vectors.pow(2).mean(1).sqrt().gt(1e-12).nonzero().squeeze(1)
        scale = 1.0 if node_type == CANCER else CONTEXT_STD
        weight[rows.to(weight.device)] = (_project(vectors[rows], self.hidden) * scale).to(weight.device, weight.dtype)
        return int(rows.numel())


class GeneSetReadIn(nn.Module):
    """A patient's omics read through the graph's gene sets and their nodes: ``(B, features) -> (B, hidden)``.

    The omics features are pooled over each gene set as ``kg_pathway`` pools them
    (:class:`~clinicmm.fusion.models.kg_pathway.GeneSetPooling`: per pathway and cancer-type gene set with enough
    measured members, ``up``, ``down`` and ``mutated`` scores of the patient), and the patient reads

        LayerNorm( sum_s (up_s W_up + down_s W_down + mutated_s W_mut) e_s / sqrt(S) )

    where ``e_s`` is set ``s``'s own node embedding in the graph model (the pathway or cancer-type node; rescaled to
    unit RMS) and the three ``W`` are hidden x hidden maps. So which genes a patient alters reaches its state through
    the pathways those genes belong to, with 3 hidden^2 weights in all rather than weights per gene or per set
    (``kg_pathway`` learns 3 x hidden per set): a set's weight is its node, which the graph's message passing
    and the other patients train too. A patient without omics pools zeros, so it reads one learned constant (the
    norm's shift).
    """

    def __init__(
        self, knowledge: HeteroData, omics_genes: Sequence[int], n_expression: int | None, dim: int, hidden: int
    ) -> None:
        super().__init__()
        self.pool = GeneSetPooling(knowledge, omics_genes, n_expression, dim)
        self.maps = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(3))
        self.norm = nn.LayerNorm(hidden)

    @property
    def num_sets(self) -> int:
        return self.pool.num_sets

    def set_embeddings(self, embeddings: nn.ModuleDict) -> Tensor:
        """(sets, hidden): each set's node embedding, rescaled to unit RMS, in the pooled view's set order."""
        parts = [
            embeddings[SET_RELATIONS[r][2]].weight[self.pool.set_node[self.pool.set_relation == r]]
            for r in range(len(SET_RELATIONS))
        ]  # sets are numbered relation by relation (gene_sets), so this is their order
        vectors = torch.cat(parts)
        return vectors / vectors.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-6)

    def pooled(self, omics: Tensor, present: Tensor, removed: Tensor | None = None) -> Tensor:
        """(B, 3 x sets): up | down | mutated per set; zeros without omics and where ``removed`` (B, sets) is True."""
        pooled = self.pool(omics) * present.to(omics).unsqueeze(1)
        if removed is not None:
            pooled = pooled * (~removed).to(pooled).repeat(1, 3)
        return pooled

    def terms(self, omics: Tensor, present: Tensor, embeddings: nn.ModuleDict) -> Tensor:
        """(B, sets): the size of each set's term in a patient's read-in (before the sum and the norm)."""
        pooled, sets, vectors = self.pooled(omics, present), self.num_sets, self.set_embeddings(embeddings)
        mapped = [w(vectors) for w in self.maps]  # (sets, hidden) per channel
        term = sum(pooled[:, c * sets : (c + 1) * sets, None] * m[None] for c, m in enumerate(mapped))
        return term.norm(dim=2)

    def forward(
        self, omics: Tensor, present: Tensor, embeddings: nn.ModuleDict, removed: Tensor | None = None
    ) -> Tensor:
        """(B, hidden). ``removed``: (B, sets) bool, sets left out (the explanations' leave-one-set-out)."""
        pooled, sets, vectors = self.pooled(omics, present, removed), self.num_sets, self.set_embeddings(embeddings)
        read = sum(w(pooled[:, c * sets : (c + 1) * sets] @ vectors) for c, w in enumerate(self.maps))
        return self.norm(read / math.sqrt(sets))

    def set_names(self, kg) -> list[tuple[str, str]]:
        """``(node type, node name)`` of each set of a ``KnowledgeGraph`` (the one the model was built on)."""
        types = [SET_RELATIONS[int(r)][2] for r in self.pool.set_relation]
        names = {t: kg.names(t) for t in set(types)}
        return [(t, names[t][int(i)]) for t, i in zip(types, self.pool.set_node)]

    def extra_repr(self) -> str:
        return f"gene_sets={self.num_sets}"


def log_odds(logits: Tensor, pred: Tensor) -> Tensor:
    """(B,) log-odds of class ``pred`` per row, ``log p / (1 - p)``: its logit minus the log-sum-exp of the others'."""
    others = logits.scatter(1, pred.view(-1, 1), float("-inf"))
    return logits.gather(1, pred.view(-1, 1)).squeeze(1) - torch.logsumexp(others, 1)


def _project(vectors: Tensor, hidden: int) -> Tensor:
    """(n, d) -> (n, hidden) by a seeded Gaussian map (identity if d == hidden), rows rescaled to unit RMS."""
    if vectors.size(1) != hidden:
        generator = torch.Generator().manual_seed(0)
        vectors = vectors @ (torch.randn(vectors.size(1), hidden, generator=generator) / math.sqrt(vectors.size(1)))
    rms = vectors.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
    return vectors / rms


def _embeddings(counts: Mapping[str, int], hidden: int) -> nn.ModuleDict:
    """One learned embedding table per knowledge node type (small for context nodes, unit for cancer types)."""
    tables = nn.ModuleDict({t: nn.Embedding(n, hidden) for t, n in counts.items()})
    for t, table in tables.items():
        nn.init.normal_(table.weight, std=1.0 if t == CANCER else CONTEXT_STD)
    return tables


def _updated(edges: Sequence[EdgeType]) -> list[str]:
    return sorted({et[2] for et in edges})


def _conv(hidden: int, heads: int, inputs: list[str], edges: list[EdgeType]) -> nn.Module:
    """An HGT layer reading ``inputs`` along ``edges`` (:class:`~clinicmm.fusion.conv.hgt.HGTLayer`: PyG's ``HGTConv``
    arithmetic and parameter names, with the output weights of only the types it updates)."""
    from clinicmm.fusion.conv.hgt import HGTLayer

    return HGTLayer(hidden, heads, inputs, edges)


def class_texts(kg) -> list[str]:
    """``'<name>. <definition>'`` of every cancer-type node of a ``KnowledgeGraph``, in node index order."""
    texts = []
    for code in kg.names(Node.CANCER):
        title, definition = kg.title(Node.CANCER, code), kg.definition(Node.CANCER, code)
        texts.append(f"{title}. {definition}".strip() if definition else title)
    return texts


def init_classes_from_text(model: nn.Module, kg, class_init: str, text_spec=None, encoder=None) -> bool:
    """Start a graph model's cancer-type nodes from the text encoder's embedding of their name and definition.

    Why: a type with a handful of training patients still gets a class prototype that sits where its description
    puts it (near the types it resembles, away from the others) instead of at a random point, and its graph
    neighbourhood (driver genes, indicating concepts) then shapes it. ``class_init`` is ``TrainingSpec.class_init``;
    the vectors come from ``encoder`` (anything with ``encode(texts, progress=False) -> (n, d) array``) or else from a
    ``TextEncoder(text_spec)`` (the workflow's ``encoders.text``), computed once per process and spec.
    The vectors are centred over the types before ``init_class_embeddings`` projects them. Returns whether the
    embeddings were set (False for models without cancer-type nodes or for 'random').
    """
    if class_init != "text" or not hasattr(model, "init_class_embeddings") or (encoder is None and text_spec is None):
        return False
    texts = class_texts(kg)
    if encoder is None:
        key = (text_spec.model_dump_json(), tuple(texts))
        if key not in _TEXT_VECTORS:
            from clinicmm.encode.text.encoder import TextEncoder

            _TEXT_VECTORS[key] = TextEncoder(text_spec).encode(texts, progress=False)
        vectors = _TEXT_VECTORS[key]
    else:
        vectors = encoder.encode(texts, progress=False)
    vectors = torch.as_tensor(vectors, dtype=torch.float32)
    if len(vectors) > 1:  # drop what all the descriptions share ("a carcinoma ..."): prototypes start apart
        vectors = vectors - vectors.mean(0, keepdim=True)
    model.init_class_embeddings(vectors)
    return True


_TEXT_VECTORS: dict[tuple[str, tuple[str, ...]], object] = {}  # (text spec, class texts) -> their embeddings

# node types whose start ``training.node_init: graph`` sets; cancer types are the class prototypes (class_init)
GRAPH_INIT_TYPES: tuple[str, ...] = (Node.GENE.value, Node.PATHWAY.value, Node.CONCEPT.value)


def init_nodes_from_graph(model: nn.Module, kg, node_init: str) -> bool:
    """Start a graph model's gene, pathway and concept nodes from the graph's structural embedding.

    ``node_init`` is ``TrainingSpec.node_init``: 'graph' sets them from
    :func:`clinicmm.knowledge.embedding.structural_embedding` of ``kg`` (genes that share pathways start close),
    'random' leaves the random start. Measured across cohorts it changes nothing consistently (README, *How the
    fusion works*), so 'random' is the default.
    The embedding is a function of the graph alone (computed once per process, graph and size), so the knowledge
    ablation's rewired graph gets its own. Returns whether anything was set (False for models without knowledge
    node embeddings, and for 'random').
    """
    tables = getattr(model, "embeddings", None)
    if node_init != "graph" or not hasattr(model, "init_node_embeddings") or tables is None:
        return False
    from clinicmm.knowledge.embedding import structural_embedding

    hidden = next(iter(tables.values())).embedding_dim
    key = (kg.fingerprint(), hidden)
    if key not in _GRAPH_VECTORS:
        _GRAPH_VECTORS.clear()  # one graph at a time is what a fit uses; do not keep every fold's rewired copy
        _GRAPH_VECTORS[key] = structural_embedding(kg, hidden)
    vectors = _GRAPH_VECTORS[key]
    return sum(model.init_node_embeddings(t, torch.from_numpy(vectors[t])) for t in GRAPH_INIT_TYPES if t in tables) > 0


_GRAPH_VECTORS: dict[tuple[str, int], dict] = {}  # (graph fingerprint, size) -> structural_embedding
