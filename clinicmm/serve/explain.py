"""Why a patient got its prediction: modality shares, top genes, concepts and gene sets, graph paths to the class.

Every number is an occlusion effect on the predicted class ``ŷ``, measured with the model in eval mode, so it needs
no gradients and means the same for every model:

* **modality share** -- the model's ``modality_weights``: for the graph models, leave-one-modality-out (the change
  of the log-odds of ``ŷ`` when that modality's evidence node is removed, normalised over the patient's modalities); for
  attention fusion its attention weights; concatenation and single-modality models have no per-patient
  attribution and report an equal share over the modalities present (one-hot for a single modality);
* **gene / concept scores** (graph models only; the others never read the links) -- leave-one-link-out: the drop of
  the log-odds of ``ŷ`` (``log p / (1 - p)``, which unlike ``log p`` does not saturate for a confident prediction)
  when one link of the patient's evidence into the graph (omics -> altered gene, note -> mentioned concept, image ->
  body-site concept) is removed, everything else kept. Positive: the link supported the prediction. The JSON keeps
  every link's score; the compact columns and the paths list only links scoring at least ``MIN_SCORE`` (0.01:
  removing the link lowers the odds of ``ŷ`` by 1% or more), so a link that does not measurably support the
  prediction is not shown as if it did (on the cohorts measured, removing all of a patient's omics links moves a
  trained graph network's class probabilities by under 0.001 on average: README, *What the omics gene links carry*).
  No message flows from a patient into the graph, so patients are independent in a batch and the k-th link of every
  patient is removed in the same forward pass: a batch costs one pass per link rank;
* **gene-set scores** (``kg_gnn`` / ``kg_rgcn`` with ``training.gene_set_input``) -- leave-one-set-out on the gene-set
  read-in: the drop of the log-odds of ``ŷ`` when one pathway's or cancer type's pooled omics values are left out of
  the patient's read-in, everything else kept. A patient's sets are many (every set its measured genes touch), so
  only the :data:`SET_CANDIDATES` with the largest terms in its read-in are scored, one forward pass per candidate
  rank (with a seed ensemble, ranked by its first member's terms); listed and shown as the links are;
* **paths** -- for each scored link, the shortest path in the knowledge graph (at most ``MAX_HOPS`` edges, any
  direction) from the linked node to the predicted cancer-type node, after ``patient <-of- evidence -link->``; a
  path's weight is its link's score, and the highest-weight paths are reported. It shows the route the model's
  messages can take from that evidence to the class, ranked by how much that evidence mattered.

``explain`` returns one JSON-ready dict per patient (no identifier: the caller adds one where it may);
``columns`` turns one into the compact columns of the predictions file.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np

from clinicmm.fusion.models.kg_gnn import log_odds
from clinicmm.keys import MODALITIES, Node

MAX_HOPS = 3  # gene -member_of-> pathway <-member_of- gene -driver_of-> cancer_type
TOP = 5  # genes / concepts in the compact columns
PATHS = 3  # paths per patient in the JSON
# a link listed as support (compact columns, paths) lowers the predicted class's odds by at least 1% when removed;
# below that it does not measurably support the prediction (the JSON's gene / concept lists keep every score)
MIN_SCORE = 0.01
SET_CANDIDATES = 10  # gene sets per patient scored by leaving them out of the read-in
COLUMNS = ("share_image", "share_note", "share_omics", "top_genes", "top_concepts", "top_gene_sets", "top_path")
_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # KnowledgeGraph -> undirected networkx graph


def explain(model, items: Sequence, knowledge, dims, kg, classes: Sequence[str], batch_size: int = 64) -> list[dict]:
    """One explanation per ``PatientEvidence`` of ``items`` (see the module docstring for what each part means)."""
    import torch

    from clinicmm.fusion.batch import build_batch

    model.eval()
    out: list[dict] = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            batch = build_batch(knowledge, list(items[start : start + batch_size]), dims)
            out += _explain_batch(model, batch, kg, list(classes))
    return out


def _explain_batch(model, batch, kg, classes: list[str]) -> list[dict]:
    import torch

    from clinicmm.fusion.models.wrappers import modality_weights_of

    logits = model(batch)
    logp, pred = torch.log_softmax(logits, 1), logits.argmax(1)
    share = modality_weights_of(model, batch).cpu().numpy()
    full = log_odds(logits, pred)
    links = _link_scores(model, batch, full, pred) if hasattr(model, "plan") else {}
    sets = _set_scores(model, batch, full, pred, kg)
    names = {t: kg.names(t) for t in (Node.GENE, Node.CONCEPT)}
    reach: dict[str, dict] = {}  # predicted type -> shortest paths from it (one search per type and batch)
    nodes = kg.class_node_names(classes)  # the cancer-type node each class is (kirc, TCGA-KIRC -> KIRC)
    result = []
    for row in range(int(batch["patient"].num_nodes)):
        target = classes[int(pred[row])]
        scored = [(m, names[node][i], s) for (r, m, node, i), s in links.items() if r == row]
        scored.sort(key=lambda x: -x[2])
        result.append(
            {
                "predicted": target,
                "probability": round(float(logp[row, pred[row]].exp()), 4),
                "modality_share": {m.value: round(float(share[row, j]), 4) for j, m in enumerate(MODALITIES)},
                "genes": [{"gene": name, "score": round(s, 4)} for m, name, s in scored if m == "omics"],
                "concepts": [
                    {"concept": name, "via": m, "score": round(s, 4)} for m, name, s in scored if m != "omics"
                ],
                "gene_sets": sorted(
                    (
                        {"set": name, "type": kind, "score": round(s, 4)}
                        for (r, kind, name), s in sets.items()
                        if r == row
                    ),
                    key=lambda x: -x["score"],
                ),
                "paths": _paths(kg, scored, nodes[int(pred[row])], reach),
            }
        )
    return result


def _set_scores(model, batch, full, pred, kg) -> dict[tuple[int, str, str], float]:
    """``(patient row, set node type, set name) -> drop of the log-odds of ŷ`` when that gene set is left out of the
    read-in, for the :data:`SET_CANDIDATES` largest terms of each patient with omics (empty without a read-in)."""
    import copy

    import torch

    from clinicmm.fusion.models.kg_pathway import OMICS
    from clinicmm.fusion.models.wrappers import networks_of

    nets = [net for net in networks_of(model) if getattr(net, "gene_sets", None) is not None]
    if not nets:
        return {}
    store, first = batch["patient"], nets[0]
    present = store.present[:, OMICS]
    terms = first.gene_sets.terms(store.x_omics, present, first.embeddings)  # (B, sets)
    names = first.gene_sets.set_names(kg)
    rows = present.nonzero().flatten()
    candidates = terms[rows].argsort(1, descending=True)[:, :SET_CANDIDATES]
    scores: dict[tuple[int, str, str], float] = {}
    for k in range(candidates.size(1)):
        cut = copy.copy(batch)  # the mask travels with this batch, never on the shared model (concurrent requests)
        cut["patient"].removed_sets = torch.zeros_like(terms, dtype=torch.bool)
        cut["patient"].removed_sets[rows, candidates[:, k]] = True
        drop = full - log_odds(model(cut), pred)
        for row, s in zip(rows.tolist(), candidates[:, k].tolist()):
            if float(terms[row, s]) > 0:  # a set the patient has no value in (nothing measured) moves nothing
                scores[(row, *names[s])] = float(drop[row])
    return scores


def _link_scores(model, batch, full, pred) -> dict[tuple[int, str, Node, int], float]:
    """``(patient row, modality, node type, node index) -> drop of the log-odds of ŷ`` for every link of every patient."""
    import copy

    from clinicmm.fusion.batch import EVIDENCE_LINKS, set_edges
    from clinicmm.keys import EVIDENCE_NODE, Rel

    scores: dict[tuple[int, str, Node, int], float] = {}
    for m in MODALITIES:
        node = EVIDENCE_NODE[m].value
        rel, target = EVIDENCE_LINKS[m.value]
        edge_type = (node, rel, target)
        edges = batch[edge_type].edge_index
        if edges.numel() == 0:
            continue
        patient_of = batch[node, Rel.OF.value, "patient"].edge_index[1]
        rank = _rank_within_source(edges[0])
        for k in range(int(rank.max()) + 1):
            keep = rank != k
            cut = copy.copy(batch)
            set_edges(cut, edge_type, edges[:, keep])
            drop = full - log_odds(model(cut), pred)
            for e in (~keep).nonzero().flatten().tolist():
                row = int(patient_of[edges[0, e]])
                scores[(row, m.value, Node(target), int(edges[1, e]))] = float(drop[row])
    return scores


def _rank_within_source(sources):
    """Position of each edge among the edges of the same source node (edges grouped by source, as batches are)."""
    import torch

    order = torch.argsort(sources, stable=True)
    ranks = torch.empty_like(sources)
    sorted_src = sources[order]
    first = torch.searchsorted(sorted_src, sorted_src)  # index of each source's first edge
    ranks[order] = torch.arange(len(sources)) - first
    return ranks


def _graph(kg):
    """The knowledge graph as an undirected networkx graph of ``(type, name)`` nodes, each edge with its relation."""
    import networkx as nx

    if kg not in _GRAPHS:
        g = nx.Graph()
        for src_type, rel, dst_type in kg.edge_types():
            for src, dst, _ in kg.edges(src_type, rel, dst_type):
                g.add_edge((src_type, src), (dst_type, dst), rel=rel, head=(src_type, src))
        _GRAPHS[kg] = g
    return _GRAPHS[kg]


def _paths(kg, scored: list[tuple[str, str, float]], target: str, cache: dict[str, dict]) -> list[dict]:
    """The highest-weight paths patient -> evidence -> linked node -> ... -> ``target`` (see the module docstring)."""
    import networkx as nx

    graph, goal = _graph(kg), (Node.CANCER.value, target)
    if goal not in graph:
        return []
    if target not in cache:
        cache[target] = nx.single_source_shortest_path(graph, goal, cutoff=MAX_HOPS)
    reach = cache[target]
    found = []
    for modality, name, score in scored:  # already highest score first
        start = (Node.GENE.value if modality == "omics" else Node.CONCEPT.value, name)
        if score < MIN_SCORE or start not in reach:
            continue
        route = reach[start][::-1]
        text = [f"patient <-of- {modality}", f"-{_link_rel(modality)}-> {start[0]}:{start[1]}"]
        for a, b in zip(route, route[1:]):
            edge = graph.edges[a, b]
            text.append(f"-{edge['rel']}-> {b[0]}:{b[1]}" if edge["head"] == a else f"<-{edge['rel']}- {b[0]}:{b[1]}")
        found.append(
            {
                "weight": round(score, 4),
                "path": " ".join(text),
                "nodes": ["patient", modality] + [f"{t}:{n}" for t, n in route],
            }
        )
        if len(found) == PATHS:
            break
    return found


def _link_rel(modality: str) -> str:
    from clinicmm.fusion.batch import EVIDENCE_LINKS

    return EVIDENCE_LINKS[modality][0]


def columns(explanation: dict | None) -> dict[str, object]:
    """The compact predictions-file columns of one explanation (empty values for an unscored row)."""
    if explanation is None:
        return {c: (np.nan if c.startswith("share_") else "") for c in COLUMNS}
    share = explanation["modality_share"]
    genes = [f"{g['gene']}:{g['score']:.3g}" for g in explanation["genes"][:TOP] if g["score"] >= MIN_SCORE]
    concepts = [f"{c['concept']}:{c['score']:.3g}" for c in explanation["concepts"][:TOP] if c["score"] >= MIN_SCORE]
    sets = explanation.get("gene_sets", [])  # explanations written before the gene-set read-in have none
    sets = [f"{g['set']}:{g['score']:.3g}" for g in sets[:TOP] if g["score"] >= MIN_SCORE]
    paths = explanation["paths"]
    return {
        "share_image": share["image"],
        "share_note": share["note"],
        "share_omics": share["omics"],
        "top_genes": "|".join(genes),
        "top_concepts": "|".join(concepts),
        "top_gene_sets": "|".join(sets),
        "top_path": f"{paths[0]['path']} ({paths[0]['weight']:.3g})" if paths else "",
    }


def add_explanations(result, model, items: Sequence, rows: Sequence[int], bundle, hetero=None):
    """``result`` (one row per input row) with the compact columns and an ``explanation`` JSON column.

    ``items`` are the scored rows' ``PatientEvidence``, ``rows`` their positions in ``result``; other rows get
    empty values. ``hetero``: the bundle's graph as HeteroData when the caller has built it already.
    """
    import json

    found = {}
    if len(items):
        hetero = hetero if hetero is not None else bundle.knowledge.to_hetero()
        explained = explain(model, items, hetero, bundle.dims, bundle.knowledge, bundle.classes)
        found = dict(zip(rows, explained))
    compact = [columns(found.get(i)) for i in range(len(result))]
    for name in COLUMNS:
        result[name] = [c[name] for c in compact]
    result["explanation"] = [json.dumps(found[i]) if i in found else "" for i in range(len(result))]
    return result


def write_explanations(result, out):
    """Move the ``explanation`` column of a predictions frame into one JSON file per scored row.

    The files go to ``<out stem>_explanations/row_<n>.json`` next to the predictions file ``out``, ``n`` being the
    row's 1-based position in that file; each holds the row number, the patient id and the explanation, and the
    frame gets an ``explanation_file`` column instead. They stay local: nothing here goes to MLflow.
    """
    import json
    from pathlib import Path

    from clinicmm.files import atomic_write_bytes

    if "explanation" not in result.columns:
        return result
    folder = Path(out).with_name(f"{Path(out).stem}_explanations")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("row_*.json"):  # from an earlier run of the same predictions file
        old.unlink()
    files = []
    for n, (pid, text) in enumerate(zip(result["patient_id"], result["explanation"]), start=1):
        if not isinstance(text, str) or not text:
            files.append("")
            continue
        path = folder / f"row_{n:05d}.json"
        atomic_write_bytes(path, json.dumps({"row": n, "patient_id": pid, **json.loads(text)}, indent=1).encode())
        files.append(f"{folder.name}/{path.name}")
    return result.drop(columns=["explanation"]).assign(explanation_file=files)
