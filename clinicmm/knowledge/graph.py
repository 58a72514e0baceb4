"""The knowledge graph: genes, pathways, cancer types and clinical concepts, and the typed edges between them.

Nodes are typed (``clinicmm.keys.Node``) and numbered per type in the order they were added, so a node's index
is stable for a given build order; ``to_files`` keeps that order, which lets a trained model ship the exact
graph it was trained on. Edges are keyed ``(src_type, relation, dst_type)`` (``loaders.SCHEMA``), stored once
per pair, each with the label of the source it came from. ``to_hetero`` hands the graph to torch-geometric
with every relation in both directions (``rev_`` + relation).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from contextlib import AbstractContextManager
from importlib import resources
from pathlib import Path

import pandas as pd

from clinicmm.errors import InputError
from clinicmm.keys import KNOWLEDGE_NODES, Node, Rel
from clinicmm.knowledge import loaders
from clinicmm.knowledge.concepts import Concept
from clinicmm.knowledge.loaders import SCHEMA, NodeRow, synonym_forms
from clinicmm.knowledge.sections import norm

EdgeType = tuple[Node, Rel, Node]
REV = "rev_"
FILES = ("nodes.tsv", "edges.tsv", "concepts.tsv")
REACTOME = {"subset": "reactome_subset.gmt", "human": "reactome_human.gmt"}  # KnowledgeGraph.default(reactome=...)


def _shipped(name: str) -> AbstractContextManager[Path]:
    """A real path to one of the data files shipped in ``clinicmm/knowledge/data``."""
    return resources.as_file(resources.files("clinicmm.knowledge").joinpath(f"data/{name}"))


# OncoTree codes that differ from the TCGA study codes the shipped cancer types use (OncoTree's own code list; the
# pairs are facts, written here by the clinicmm developers)
ONCOTREE_CODES = {"CCRCC": "KIRC", "CHRCC": "KICH", "PRCC": "KIRP", "HCC": "LIHC", "HGSOC": "OV", "AML": "LAML",
                  "DLBCLNOS": "DLBC", "GB": "GBM", "UM": "UVM", "PLMESO": "MESO", "THPA": "THCA"}  # fmt: skip


def _label_key(value: str) -> str:
    """A label compared without case, spacing and punctuation: ``'Lung adenocarcinoma'`` -> ``'lungadenocarcinoma'``."""
    return "".join(ch for ch in value.lower() if ch.isalnum())


def _norm_body_part(value: str) -> str:
    return " ".join(value.lower().replace("_", " ").replace("-", " ").split())


class KnowledgeGraph:
    """Typed nodes with names, typed edges with a source label each; see the module docstring."""

    def __init__(self) -> None:
        self._names: dict[Node, list[str]] = {t: [] for t in KNOWLEDGE_NODES}
        self._index: dict[Node, dict[str, int]] = {t: {} for t in KNOWLEDGE_NODES}
        self._info: dict[tuple[Node, str], tuple[str, str]] = {}  # (type, name) -> (title, definition)
        self._edges: dict[EdgeType, dict[tuple[int, int], str]] = {}
        self._concepts: dict[str, Concept] = {}
        self._body_parts: dict[str, str] | None = None
        self._node_source: dict[tuple[Node, str], str] = {}  # the source that first added each node

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def default(cls, reactome: str = "subset") -> KnowledgeGraph:
        """The shipped graph: cancer types, concepts, Reactome pathways and the curated edges (SOURCES.md).

        ``reactome``: 'subset' (341 pathways around the demo genes; small and fast) or 'human' (every human
        Reactome pathway of 5-500 genes: 1,862 pathways, ~10.9k genes, for real cohorts).
        """
        if reactome not in REACTOME:
            raise InputError(f"unknown Reactome set {reactome!r}; valid: {', '.join(REACTOME)}")
        kg = cls()
        with _shipped("cancer_types.tsv") as path:
            kg.add_nodes(loaders.read_cancer_types(path), source="clinicmm cancer types")
        with _shipped("concepts.tsv") as path:
            kg.add_concepts(loaders.read_concepts(path), source="clinicmm vocabulary")
        with _shipped(REACTOME[reactome]) as path:
            kg.add_gmt(path, source="Reactome")
        with _shipped("edges.tsv") as path:
            kg.add_triples(path)
        return kg

    def add_file(self, path: str | Path) -> int:
        """Add a user graph file by its suffix: ``.gmt`` gene sets, ``.obo`` ontology, else TSV triples."""
        suffix = Path(path).suffix.lower()
        if suffix == ".gmt":
            return self.add_gmt(path)
        return self.add_obo(path) if suffix == ".obo" else self.add_triples(path)

    def add_obo(self, path: str | Path, source: str | None = None) -> int:
        """Add an OBO ontology's cancer terms as ``diagnosis`` concepts that indicate cancer types; returns edges added.

        A term names a cancer type through an OncoTree / TCGA cross-reference (``xref: ONCOTREE:LUAD``) or by its name
        or an exact synonym equal to a cancer type's name ("Lung Adenocarcinoma"); a cross-referenced code the graph
        lacks becomes a cancer-type node with the term's name and definition. Every such term and each of its
        ``is_a`` descendants becomes a concept ``diagnosis:<name>`` with its EXACT and NARROW synonyms (so notes that
        name it link to it) and an ``indicates`` edge to the cancer types of its nearest named ancestors. Terms
        under no cancer type are left out. The source label is the ontology's name and version.
        """
        label, terms = loaders.read_obo(path)
        source = source or label
        by_id = {t.id: t for t in terms}
        codes = _obo_codes(terms, {self.title(Node.CANCER, c).lower(): c for c in self.names(Node.CANCER)})
        for term in terms:
            if term.codes:
                self.add_nodes([NodeRow(Node.CANCER, c, term.name, term.definition) for c in term.codes], source)
        added = 0
        for term_id, targets in codes.items():
            term = by_id[term_id]
            name = norm(term.name)
            concept = Concept(f"diagnosis:{name}", name, "diagnosis", synonym_forms(term.synonyms))
            self.add_concepts([concept], source)
            added += sum(
                self.add_edge(Node.CONCEPT, concept.id, Rel.INDICATES, Node.CANCER, c, source) for c in targets
            )
        return added

    def add_gmt(self, path: str | Path, source: str | None = None) -> int:
        """Add a GMT file's gene sets as pathway nodes with gene ``member_of`` edges; returns edges added."""
        added = 0
        for gene_set in loaders.read_gmt(path):
            self.add_nodes(
                [NodeRow(Node.PATHWAY, gene_set.name, gene_set.name, gene_set.description)], source or Path(path).name
            )
            for gene in gene_set.genes:
                added += self.add_edge(
                    Node.GENE, gene, Rel.MEMBER_OF, Node.PATHWAY, gene_set.name, source or Path(path).name
                )
        return added

    def add_triples(self, path: str | Path) -> int:
        """Add the edges of a triple file (``edges.tsv`` columns or ``head relation tail``); returns edges added."""
        return sum(
            self.add_edge(t.src_type, t.src, t.relation, t.dst_type, t.dst, t.source)
            for t in loaders.read_triples(path)
        )

    def add_nodes(self, rows: Iterable[NodeRow], source: str = "") -> int:
        """Add nodes with their title / definition (kept when a node already has them); returns nodes added."""
        before = sum(map(len, self._names.values()))
        for row in rows:
            self._add_node(row.node_type, row.name, source)
            old = self._info.get((row.node_type, row.name), ("", ""))
            self._info[(row.node_type, row.name)] = (old[0] or row.title, old[1] or row.definition)
        return sum(map(len, self._names.values())) - before

    def add_concepts(self, concepts: Iterable[Concept], source: str = "") -> int:
        """Add concept nodes with their names, kinds and synonyms (later metadata replaces earlier)."""
        before = self.num_nodes(Node.CONCEPT)
        for concept in concepts:
            self._add_node(Node.CONCEPT, concept.id, source)
            self._concepts[concept.id] = concept
        self._body_parts = None
        return self.num_nodes(Node.CONCEPT) - before

    def ensure_nodes(self, node_type: Node | str, names: Iterable[str], source: str = "labels") -> None:
        """Add the nodes of ``names`` that are missing (e.g. a label code the graph does not know)."""
        t = self._type(node_type)
        for name in names:
            self._add_node(t, str(name), source)

    def add_edge(
        self, src_type: Node | str, src: str, relation: Rel | str, dst_type: Node | str, dst: str, source: str = ""
    ) -> bool:
        """Add one edge (and its end nodes when missing); False when the edge was already there."""
        st, dt = self._type(src_type), self._type(dst_type)
        rel = loaders.relation(str(relation), st, dt, "KnowledgeGraph.add_edge")
        pair = (self._add_node(st, src, source), self._add_node(dt, dst, source))
        edges = self._edges.setdefault((st, rel, dt), {})
        if pair in edges:
            return False
        edges[pair] = source
        return True

    def _add_node(self, node_type: Node, name: str, source: str = "") -> int:
        index = self._index[node_type]
        if name not in index:
            if not name:
                raise InputError(f"empty {node_type.value} name; every node needs a name")
            index[name] = len(self._names[node_type])
            self._names[node_type].append(name)
            self._node_source[(node_type, name)] = source
        return index[name]

    @staticmethod
    def _type(node_type: Node | str) -> Node:
        return loaders.node_type(str(node_type), "KnowledgeGraph")

    # ----------------------------------------------------------------------------------------- queries
    def index(self, node_type: Node | str, name: str) -> int | None:
        """Index of a node within its type, or None when the graph does not have it."""
        return self._index[self._type(node_type)].get(name)

    def names(self, node_type: Node | str) -> list[str]:
        """Names of the nodes of one type, in index order."""
        return list(self._names[self._type(node_type)])

    def num_nodes(self, node_type: Node | str) -> int:
        return len(self._names[self._type(node_type)])

    def cancer_node(self, label: str) -> str | None:
        """The cancer-type node a label names, or None: the node of that name; else a cancer type whose code or
        full name it is, ignoring case, spacing and punctuation (``kirc``, ``Clear Cell Renal Cell Carcinoma``), with
        a ``TCGA-`` project prefix (the GDC's ``TCGA-KIRC``) or as OncoTree spells the code (``CCRCC``)."""
        label = str(label).strip()
        names = self._index[Node.CANCER]
        if label in names:
            return label
        keys: dict[str, str] = {}
        for name in self._names[Node.CANCER]:
            for form in (name, self.title(Node.CANCER, name)):
                keys.setdefault(_label_key(form), name)
        key = _label_key(label)
        key = key.removeprefix("tcga") if key.startswith("tcga") and label.upper().startswith("TCGA") else key
        code = ONCOTREE_CODES.get(key.upper(), "")
        return keys.get(key) or (code if code in names else None)

    def class_node_names(self, classes: Iterable[str]) -> list[str]:
        """The cancer-type node of each class (:meth:`cancer_node`), or the class itself where none is named or two
        classes would share one node (so each keeps a node of its own)."""
        classes = [str(c) for c in classes]
        found = [self.cancer_node(c) or c for c in classes]
        counts = Counter(found)
        return [node if counts[node] == 1 else label for label, node in zip(classes, found, strict=True)]

    def title(self, node_type: Node | str, name: str) -> str:
        """Human-readable name (a cancer type's full name, a pathway's name); the node name when none."""
        return self._info.get((self._type(node_type), name), ("", ""))[0] or name

    def definition(self, node_type: Node | str, name: str) -> str:
        """A node's one-line definition (cancer types) or description (pathways: the GMT's second column)."""
        return self._info.get((self._type(node_type), name), ("", ""))[1]

    def edge_types(self) -> list[tuple[str, str, str]]:
        """The forward edge types holding at least one edge, as string triples."""
        return sorted((s.value, r.value, d.value) for (s, r, d), e in self._edges.items() if e)

    def edges(self, src_type: Node | str, relation: Rel | str, dst_type: Node | str) -> list[tuple[str, str, str]]:
        """``(src name, dst name, source label)`` of every edge of one type, in (src, dst) index order."""
        key = (self._type(src_type), Rel(str(relation)), self._type(dst_type))
        src_names, dst_names = self._names[key[0]], self._names[key[2]]
        return [(src_names[s], dst_names[d], label) for (s, d), label in sorted(self._edges.get(key, {}).items())]

    def edge_pairs(self, src_type: Node | str, relation: Rel | str, dst_type: Node | str) -> list[tuple[int, int]]:
        """``(src index, dst index)`` of every edge of one type, in that order (the rows of its ``edge_index``)."""
        return sorted(self._edges.get((self._type(src_type), Rel(str(relation)), self._type(dst_type)), {}))

    def concepts(self) -> list[Concept]:
        """Every concept node's metadata, in index order; a node added without metadata gets a bare one."""
        return [
            self._concepts.get(cid) or Concept(cid, cid.partition(":")[2] or cid, cid.partition(":")[0])
            for cid in self._names[Node.CONCEPT]
        ]

    def concept_for_body_part(self, value: str | None) -> str | None:
        """The body-part concept id of a DICOM BodyPartExamined value (CHEST, THORAX, LUNG -> bodypart:chest)."""
        if self._body_parts is None:
            self._body_parts = {}
            for concept in self._concepts.values():
                if concept.kind == "bodypart":
                    for form in concept.forms():
                        self._body_parts.setdefault(_norm_body_part(form), concept.id)
                        self._body_parts.setdefault(_norm_body_part(form).replace(" ", ""), concept.id)
        key = _norm_body_part(value or "")
        return self._body_parts.get(key) or self._body_parts.get(key.replace(" ", ""))

    # ----------------------------------------------------------------------------------------- export
    def to_hetero(self):  # -> torch_geometric.data.HeteroData
        """The graph as ``HeteroData``: ``num_nodes`` and ``node_id`` per type, every relation both ways."""
        import torch
        from torch_geometric.data import HeteroData

        data = HeteroData()
        for t in KNOWLEDGE_NODES:
            data[t.value].num_nodes = self.num_nodes(t)
            data[t.value].node_id = torch.arange(self.num_nodes(t))
        for rel, (s, d) in SCHEMA.items():
            pairs = self.edge_pairs(s, rel, d)
            edge_index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t().contiguous()
            data[s.value, rel.value, d.value].edge_index = edge_index
            data[d.value, REV + rel.value, s.value].edge_index = edge_index.flip(0).contiguous()
        data.validate(raise_on_error=True)
        return data

    def rewired(self, seed: int = 0) -> KnowledgeGraph:
        """A copy with every relation's edges rewired at random, each node keeping its degree in that relation.

        The knowledge ablation of ``clinicmm compare`` (``compare.knowledge_ablation``): the same nodes, node order,
        edge counts and degrees, with the biology scrambled, so a graph model's gain over it comes from which genes,
        pathways and types are linked and not from the extra parameters or the graph's shape.
        """
        import copy

        import numpy as np

        rng = np.random.default_rng(seed)
        out = copy.copy(self)
        out._edges = {key: _rewire(edges, rng) for key, edges in self._edges.items()}
        return out

    def fingerprint(self) -> str:
        """sha256 hex of the nodes in index order and the sorted edge list.

        Node order is part of it because a trained model's node embeddings are looked up by index; source
        labels and concept synonyms are not.
        """
        lines = [f"node\t{t.value}\t{name}" for t in KNOWLEDGE_NODES for name in self._names[t]]
        lines += sorted(
            f"edge\t{s.value}\t{src}\t{r.value}\t{d.value}\t{dst}"
            for (s, r, d) in self._edges
            for src, dst, _ in self.edges(s, r, d)
        )
        return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()

    def summary(self) -> pd.DataFrame:
        """Counts: nodes per type, edges per relation and per source; columns ``section``, ``name``, ``count``."""
        rows = [("nodes", t.value, self.num_nodes(t)) for t in KNOWLEDGE_NODES]
        rows += sorted(
            ("relation", f"{s.value} {r.value} {d.value}", len(edges))
            for (s, r, d), edges in self._edges.items()
            if edges
        )
        sources = Counter(label for edges in self._edges.values() for label in edges.values())
        rows += [("source", label or "(none)", n) for label, n in sorted(sources.items())]
        return pd.DataFrame(rows, columns=["section", "name", "count"])

    def by_source(self) -> pd.DataFrame:
        """One row per source: the nodes it added first, per type, and its edges, per relation.

        A node counts once, for the source that added it first (cancer types and concepts come from the shipped
        tables before any edge file names them); edges count for the source on their row.
        """
        nodes = Counter((label or "(none)", t.value) for (t, _), label in self._node_source.items())
        edges = Counter(
            (label or "(none)", f"{s.value} {r.value} {d.value}")
            for (s, r, d), pairs in self._edges.items()
            for label in pairs.values()
        )
        sources = sorted({s for s, _ in nodes} | {s for s, _ in edges})
        relations = sorted({r for _, r in edges})
        rows = [[s, *(nodes[s, t.value] for t in KNOWLEDGE_NODES), *(edges[s, r] for r in relations)] for s in sources]
        return pd.DataFrame(rows, columns=["source", *(t.value for t in KNOWLEDGE_NODES), *relations])

    def to_files(self, folder: str | Path) -> Path:
        """Write ``nodes.tsv`` (index order), ``edges.tsv`` and ``concepts.tsv`` into ``folder``; returns it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        nodes = [(t.value, n, *self._info.get((t, n), ("", ""))) for t in KNOWLEDGE_NODES for n in self._names[t]]
        loaders.write_tsv(folder / "nodes.tsv", loaders.NODE_COLUMNS, nodes)
        edges = [
            (s.value, src, r.value, d.value, dst, label)
            for (s, r, d) in sorted(self._edges)
            for src, dst, label in self.edges(s, r, d)
        ]
        loaders.write_tsv(folder / "edges.tsv", loaders.EDGE_COLUMNS, edges)
        concepts = [(c.id, c.name, c.kind, "|".join(c.synonyms)) for c in self._concepts.values()]
        loaders.write_tsv(folder / "concepts.tsv", loaders.CONCEPT_COLUMNS, concepts)
        return folder

    @classmethod
    def from_files(cls, folder: str | Path) -> KnowledgeGraph:
        """The graph written by ``to_files``, with the same node indices and fingerprint."""
        folder = Path(folder)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise InputError(
                f"{folder}: missing {', '.join(missing)}; expected a folder written by "
                f"KnowledgeGraph.to_files ({', '.join(FILES)})"
            )
        kg = cls()
        kg.add_nodes(loaders.read_nodes(folder / "nodes.tsv"))
        kg.add_concepts(loaders.read_concepts(folder / "concepts.tsv"))
        kg.add_triples(folder / "edges.tsv")
        return kg

    def __repr__(self) -> str:
        counts = ", ".join(f"{t.value}={self.num_nodes(t)}" for t in KNOWLEDGE_NODES)
        return f"KnowledgeGraph({counts}, edges={sum(map(len, self._edges.values()))})"


def _rewire(edges: dict[tuple[int, int], str], rng) -> dict[tuple[int, int], str]:
    """``edges`` with their destinations permuted (source and destination degrees kept), then duplicates removed
    by swapping their destination with another edge's until every (source, destination) pair is unique."""
    import numpy as np

    if len(edges) < 2:
        return dict(edges)
    pairs = np.array(list(edges), dtype=np.int64)
    src, dst = pairs[:, 0], pairs[rng.permutation(len(pairs)), 1]
    for _ in range(1000):
        keys = src * (int(dst.max()) + 1) + dst
        _, first = np.unique(keys, return_index=True)
        dup = np.setdiff1d(np.arange(len(keys)), first)
        if not len(dup):
            break
        for i, j in zip(dup, rng.integers(0, len(dst), len(dup))):  # one swap at a time: the degrees stay
            dst[i], dst[j] = dst[j], dst[i]
    labels = list(edges.values())
    return {(int(s), int(d)): labels[i] for i, (s, d) in enumerate(zip(src, dst))}


def _obo_codes(terms: list[loaders.OboTerm], titles: dict[str, str]) -> dict[str, list[str]]:
    """Cancer-type codes of every OBO term at or under a term that names a type (see ``KnowledgeGraph.add_obo``)."""
    by_id = {t.id: t for t in terms}
    anchors = {}
    for term in terms:
        named = [titles[f.lower()] for f in (term.name, *term.synonyms) if f.lower() in titles]
        if term.codes or named:
            anchors[term.id] = list(dict.fromkeys(term.codes or named[:1]))
    memo: dict[str, list[str]] = {}

    def codes(term_id: str, path: frozenset[str]) -> list[str]:
        if term_id not in memo:
            if term_id in anchors:
                memo[term_id] = anchors[term_id]
            else:
                parents = by_id[term_id].parents if term_id in by_id else ()
                found = [c for p in parents if p not in path for c in codes(p, path | {term_id})]
                memo[term_id] = list(dict.fromkeys(found))
        return memo[term_id]

    return {t.id: found for t in terms if (found := codes(t.id, frozenset()))}


def load_knowledge(wf) -> KnowledgeGraph:
    """A workflow's graph: the shipped one (with its Reactome set) plus the workflow's own GMT / TSV / OBO files."""
    import logging

    kg = KnowledgeGraph.default(wf.reactome)
    for path in wf.knowledge:
        path = wf.resolve(path)
        added = kg.add_file(path)
        logging.getLogger("clinicmm").info("knowledge: %s added %d edges", path.name, added)
    return kg
