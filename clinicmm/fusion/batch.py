"""A batch of patients as one torch-geometric ``HeteroData``: the knowledge graph plus patient and evidence nodes.

Each patient becomes a ``patient`` node; each modality the patient has becomes one evidence node (``image``,
``note``, ``omics``) holding that modality's embedding, joined to its patient (``of``) and to the knowledge nodes
it points at (``altered`` genes, ``mentions``/``shows`` concepts). A missing modality, or one removed by modality
dropout, has no evidence node and no edges. Every batch carries every node and edge type of :func:`schema`
(possibly empty), so a heterogeneous GNN built once from that metadata applies to any batch. Dense per-patient
views (``x_image``, ``x_note``, ``x_omics`` and the ``present`` mask) sit on the patient store for the simple
models.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch_geometric.data import HeteroData

from clinicmm.keys import EVIDENCE_NODE, KNOWLEDGE_NODES, MODALITIES, Node, Rel

PATIENT = Node.PATIENT.value
REV = "rev_"
KNOWLEDGE_RELS: tuple[tuple[str, str, str], ...] = (
    (Node.GENE.value, Rel.MEMBER_OF.value, Node.PATHWAY.value),
    (Node.GENE.value, Rel.DRIVER_OF.value, Node.CANCER.value),
    (Node.CONCEPT.value, Rel.INDICATES.value, Node.CANCER.value),
)
# modality -> (relation, knowledge node type) of the links from its evidence node into the graph
EVIDENCE_LINKS: dict[str, tuple[str, str]] = {
    "image": (Rel.SHOWS.value, Node.CONCEPT.value),
    "note": (Rel.MENTIONS.value, Node.CONCEPT.value),
    "omics": (Rel.ALTERED.value, Node.GENE.value),
}
# modality -> PatientEvidence attribute holding the knowledge node indices it links to
LINK_FIELD = {"image": "image_concepts", "note": "note_concepts", "omics": "omics_genes"}


@dataclass
class PatientEvidence:
    """What one patient brings to a batch: per-modality embeddings (``None`` when missing) and graph links."""

    label: int = -1
    image: np.ndarray | None = None
    note: np.ndarray | None = None
    omics: np.ndarray | None = None
    image_concepts: list[int] = field(default_factory=list)
    note_concepts: list[int] = field(default_factory=list)
    omics_genes: list[int] = field(default_factory=list)
    offset: np.ndarray | None = None  # training only: out-of-fold linear logits a LinearOffset network corrects


def reverse(edge_type: tuple[str, str, str]) -> tuple[str, str, str]:
    """``(src, rel, dst)`` -> ``(dst, 'rev_' + rel, src)``."""
    src, rel, dst = edge_type
    return (dst, REV + rel, src)


def _with_reverses(edge_types: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [t for et in edge_types for t in (et, reverse(et))]


def knowledge_edge_types() -> list[tuple[str, str, str]]:
    """The edge types of the knowledge graph contract, each followed by its reverse."""
    return _with_reverses(KNOWLEDGE_RELS)


def evidence_edge_types() -> list[tuple[str, str, str]]:
    """The patient-side edge types (evidence ``of`` patient, evidence links into the graph) with reverses."""
    forward = []
    for m in MODALITIES:
        node = EVIDENCE_NODE[m].value
        rel, target = EVIDENCE_LINKS[m.value]
        forward += [(node, Rel.OF.value, PATIENT), (node, rel, target)]
    return _with_reverses(forward)


def schema(dims: Mapping[str, int] | None = None) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The fixed ``(node_types, edge_types)`` metadata of every batch; ``dims`` is checked when given."""
    if dims is not None:
        check_dims(dims)
    nodes = [t.value for t in KNOWLEDGE_NODES] + [PATIENT] + [EVIDENCE_NODE[m].value for m in MODALITIES]
    return nodes, knowledge_edge_types() + evidence_edge_types()


def check_dims(dims: Mapping[str, int]) -> dict[str, int]:
    """Check ``dims`` names a positive embedding size for exactly the three modalities."""
    names = sorted(m.value for m in MODALITIES)
    if not isinstance(dims, Mapping) or sorted(str(k) for k in dims) != names:
        raise ValueError(f"Expected dims with keys {names} (got {dims!r})")
    for key, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"Expected dims[{str(key)!r}] to be a positive int (got {value!r})")
    return {str(k): int(v) for k, v in dims.items()}


def check_knowledge(knowledge: HeteroData) -> None:
    """Check the knowledge graph has the four knowledge node types with ``num_nodes`` and only known edge types."""
    if not isinstance(knowledge, HeteroData):
        raise ValueError(f"Expected knowledge to be a torch_geometric HeteroData (got {type(knowledge).__name__})")
    names = [t.value for t in KNOWLEDGE_NODES]
    missing = [t for t in names if t not in knowledge.node_types or knowledge[t].num_nodes is None]
    extra = sorted(set(knowledge.node_types) - set(names))
    if missing or extra:
        raise ValueError(
            f"Expected knowledge node types {names}, each with num_nodes (missing {missing}, extra {extra})"
        )
    unknown = sorted(set(knowledge.edge_types) - set(knowledge_edge_types()))
    if unknown:
        raise ValueError(f"Expected knowledge edge types among {knowledge_edge_types()} (got unknown {unknown})")


def _empty_edges() -> torch.Tensor:
    return torch.empty(2, 0, dtype=torch.long)


def _copy_knowledge(knowledge: HeteroData) -> HeteroData:
    """A shallow copy (tensors shared, never modified) with ``node_id`` and every contract edge type present."""
    out = HeteroData()
    for t in (n.value for n in KNOWLEDGE_NODES):
        for key, value in knowledge[t].items():
            out[t][key] = value
        out[t].num_nodes = int(knowledge[t].num_nodes)
        if "node_id" not in knowledge[t]:
            out[t].node_id = torch.arange(out[t].num_nodes)
    for et in knowledge_edge_types():
        store = knowledge[et] if et in knowledge.edge_types else {}
        for key, value in store.items():
            out[et][key] = value
        if "edge_index" not in out[et]:
            out[et].edge_index = _empty_edges()
    return out


def _check_drop(drop: Mapping[str, np.ndarray] | None, size: int) -> dict[str, np.ndarray]:
    names = [m.value for m in MODALITIES]
    masks = {m: np.zeros(size, dtype=bool) for m in names}
    for key, mask in (drop or {}).items():
        arr = np.asarray(mask)
        if str(key) not in names or arr.shape != (size,) or arr.dtype != bool:
            raise ValueError(
                f"Expected drop[{str(key)!r}] a bool mask of shape ({size},) for a modality in {names} "
                f"(got dtype {arr.dtype}, shape {arr.shape})"
            )
        masks[str(key)] = arr
    return masks


def _vector(p: PatientEvidence, modality: str, dim: int, row: int) -> np.ndarray | None:
    value = getattr(p, modality)
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float32)
    if arr.shape != (dim,) or not np.isfinite(arr).all():
        raise ValueError(
            f"Expected a finite {modality} embedding of shape ({dim},) for patient {row} of the batch "
            f"(got shape {arr.shape}{'' if np.isfinite(arr).all() else ' with non-finite values'})"
        )
    return arr


def _links(p: PatientEvidence, modality: str, num_targets: int, row: int) -> list[int]:
    idx = sorted({int(i) for i in getattr(p, LINK_FIELD[modality])})
    if idx and (idx[0] < 0 or idx[-1] >= num_targets):
        raise ValueError(
            f"Expected {LINK_FIELD[modality]} of patient {row} of the batch in [0, {num_targets}) "
            f"(got {idx[0] if idx[0] < 0 else idx[-1]})"
        )
    return idx


def _add_modality(
    out: HeteroData, patients: Sequence[PatientEvidence], modality: str, dim: int, dropped: np.ndarray
) -> None:
    """Add one modality's evidence nodes, their edges, the dense view and the presence column."""
    node = EVIDENCE_NODE[modality].value
    rel, target = EVIDENCE_LINKS[modality]
    dense = torch.zeros(len(patients), dim)
    rows, vectors, links = [], [], [[], []]
    for row, p in enumerate(patients):
        vec = _vector(p, modality, dim, row)
        targets = _links(p, modality, out[target].num_nodes, row)
        if vec is None or dropped[row]:
            continue
        links[0] += [len(rows)] * len(targets)
        links[1] += targets
        rows.append(row)
        vectors.append(vec)
    x = torch.from_numpy(np.stack(vectors)) if vectors else torch.zeros(0, dim)
    dense[rows] = x
    out[node].x, out[node].num_nodes = x, len(rows)
    out[PATIENT][f"x_{modality}"] = dense
    set_edges(out, (node, Rel.OF.value, PATIENT), torch.tensor([list(range(len(rows))), rows], dtype=torch.long))
    set_edges(out, (node, rel, target), torch.tensor(links, dtype=torch.long).view(2, -1))


def set_edges(out: HeteroData, edge_type: tuple[str, str, str], edge_index: torch.Tensor) -> None:
    """Set ``edge_type``'s edges and their reverse relation's (messages flow both ways)."""
    out[edge_type].edge_index = edge_index.view(2, -1)
    out[reverse(edge_type)].edge_index = edge_index.view(2, -1).flip(0)


def build_batch(
    knowledge: HeteroData,
    patients: Sequence[PatientEvidence],
    dims: Mapping[str, int],
    drop: Mapping[str, np.ndarray] | None = None,
) -> HeteroData:
    """The knowledge graph plus ``patients`` as patient/evidence nodes; ``drop`` masks remove modalities (training).

    Patient store: ``num_nodes`` B, ``y`` (B,) long (-1 = unknown), ``x_<modality>`` (B, dim) float32 with zeros
    where missing or dropped, ``present`` (B, 3) bool in the order of ``clinicmm.keys.MODALITIES``.
    """
    dims = check_dims(dims)
    check_knowledge(knowledge)
    if not patients or not all(isinstance(p, PatientEvidence) for p in patients):
        raise ValueError(
            f"Expected a non-empty list of PatientEvidence (got {type(patients).__name__} "
            f"of {len(patients) if hasattr(patients, '__len__') else '?'} items)"
        )
    masks = _check_drop(drop, len(patients))
    out = _copy_knowledge(knowledge)
    out[PATIENT].num_nodes = len(patients)
    out[PATIENT].y = torch.tensor([int(p.label) for p in patients], dtype=torch.long)
    for m in MODALITIES:
        _add_modality(out, patients, m.value, dims[m.value], masks[m.value])
    out[PATIENT].present = torch.stack([_present(out, m.value) for m in MODALITIES], dim=1)
    if all(p.offset is not None for p in patients):
        out[PATIENT].offset = torch.as_tensor(np.stack([p.offset for p in patients]), dtype=torch.float32)
    return out


def _present(batch: HeteroData, modality: str) -> torch.Tensor:
    mask = torch.zeros(batch[PATIENT].num_nodes, dtype=torch.bool)
    mask[batch[EVIDENCE_NODE[modality].value, Rel.OF.value, PATIENT].edge_index[1]] = True
    return mask


def without_modality(batch: HeteroData, modality: str) -> HeteroData:
    """A shallow copy of ``batch`` in which no patient has ``modality`` (for ablation); ``batch`` is unchanged."""
    names = [m.value for m in MODALITIES]
    if modality not in names:
        raise ValueError(f"Expected a modality in {names} (got {modality!r})")
    out = copy.copy(batch)
    node = EVIDENCE_NODE[modality].value
    rel, target = EVIDENCE_LINKS[modality]
    out[node].x = out[node].x[:0]
    out[node].num_nodes = 0
    for et in ((node, Rel.OF.value, PATIENT), (node, rel, target)):
        set_edges(out, et, _empty_edges().to(batch[et].edge_index.device))
    out[PATIENT][f"x_{modality}"] = torch.zeros_like(batch[PATIENT][f"x_{modality}"])
    present = batch[PATIENT].present.clone()
    present[:, names.index(modality)] = False
    out[PATIENT].present = present
    return out


def dropout_masks(patients: Sequence[PatientEvidence], p: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Modality-dropout masks: each present modality dropped with probability ``p``, one always kept per patient."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"Expected a modality dropout probability in [0, 1) (got {p})")
    names = [m.value for m in MODALITIES]
    has = np.array([[getattr(pt, m) is not None for m in names] for pt in patients], dtype=bool).reshape(-1, 3)
    drop = has & (rng.random(has.shape) < p)
    for row in np.flatnonzero(has.any(1) & ~(has & ~drop).any(1)):
        keep = rng.choice(np.flatnonzero(has[row]))
        drop[row, keep] = False
    return {m: drop[:, i].copy() for i, m in enumerate(names)}


def collate(
    knowledge: HeteroData, dims: Mapping[str, int], modality_dropout: float = 0.0, seed: int | None = None
) -> Callable[[list[PatientEvidence]], HeteroData]:
    """A DataLoader ``collate_fn`` turning a list of PatientEvidence into a batch (with modality dropout if > 0)."""
    dims = check_dims(dims)
    check_knowledge(knowledge)
    rng = np.random.default_rng(seed)
    if not 0.0 <= modality_dropout < 1.0:
        raise ValueError(f"Expected modality_dropout in [0, 1) (got {modality_dropout})")

    def _collate(patients: list[PatientEvidence]) -> HeteroData:
        drop = dropout_masks(patients, modality_dropout, rng) if modality_dropout > 0 else None
        return build_batch(knowledge, patients, dims, drop)

    return _collate
