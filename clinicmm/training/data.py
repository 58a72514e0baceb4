"""From encoded patients to the fusion models' inputs: standardised vectors and graph-node indices."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass

import numpy as np

from clinicmm.errors import StageError
from clinicmm.keys import HAS, MODALITIES, Col, Modality, Node, Split

LINK_NODE = {"image": Node.CONCEPT, "note": Node.CONCEPT, "omics": Node.GENE}


@dataclass
class Standardizer:
    """Per-modality mean / std fitted on the train split only (omics features arrive standardised already)."""

    mean: dict[str, list[float]]
    std: dict[str, list[float]]

    @classmethod
    def fit(cls, vectors: dict[str, np.ndarray], rows: np.ndarray, skip: tuple[str, ...] = ("omics",)) -> Standardizer:
        """Mean / std of ``rows``; the modalities in ``skip`` (default: omics, standardised upstream) stay as they are."""
        mean, std = {}, {}
        for m, v in vectors.items():
            sub = v[rows]
            sub = sub[~np.isnan(sub).any(axis=1)]
            if m in skip or len(sub) < 2:
                mean[m], std[m] = [0.0] * v.shape[1], [1.0] * v.shape[1]
                continue
            mean[m] = sub.mean(axis=0).tolist()
            std[m] = np.where(sub.std(axis=0) > 1e-6, sub.std(axis=0), 1.0).tolist()
        return cls(mean, std)

    def apply(self, modality: str, v: np.ndarray) -> np.ndarray:
        return ((v - np.asarray(self.mean[modality])) / np.asarray(self.std[modality])).astype(np.float32)


EARLY_STOP_SHARE = 0.15  # of the training rows, when there is no validation split


def split_val(train: np.ndarray, y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a stratified ``share`` of the positions ``train`` (labels ``y[train]``) for early stopping; plain
    (unstratified) when a class has a single patient."""
    from sklearn.model_selection import train_test_split

    try:
        return tuple(train_test_split(train, test_size=share, stratify=y[train], random_state=seed))
    except ValueError:  # a class with a single training patient cannot be stratified
        return tuple(train_test_split(train, test_size=share, random_state=seed))


def hold_out(train: tuple, seed: int, share: float = EARLY_STOP_SHARE) -> tuple[tuple, tuple]:
    """``(rows, labels)`` split into a training part and an early-stopping part (``share`` of it, stratified)."""
    rows, y = np.asarray(train[0]), np.asarray(train[1])
    keep, held = split_val(np.arange(len(rows)), y, share, seed)
    return (rows[keep], y[keep]), (rows[held], y[held])


def class_nodes(kg, classes: list[str]):
    """The cancer_type node index of each class, in class order (LongTensor): what the KG-GNN scores against. A
    class is the node its label names (:meth:`~clinicmm.knowledge.graph.KnowledgeGraph.class_node_names`: ``kirc``,
    ``TCGA-KIRC`` and ``CCRCC`` are the graph's KIRC), else a node of its own (:func:`add_class_nodes`)."""
    import torch

    return torch.tensor([kg.index(Node.CANCER, c) for c in kg.class_node_names(classes)], dtype=torch.long)


def add_class_nodes(kg, classes: list[str]) -> list[str]:
    """Give every class a cancer_type node: the one its label names, else a new node without edges (a label the
    graph does not know: a non-cancer or binary label, a local name). Returns the classes that got a new node."""
    nodes = kg.class_node_names(classes)
    new = [c for c, node in zip(classes, nodes, strict=True) if kg.index(Node.CANCER, node) is None]
    kg.ensure_nodes(Node.CANCER, nodes)
    return new


def omics_gene_index(
    genomics: dict | None, kg, model: str | None = None, gene_set_input: bool = False
) -> tuple[list | None, int | None]:
    """``(gene node index of each omics feature or -1, number of expression features)`` from a fitted genomics
    preprocessor's description (``genomics.json``), linked to ``kg``'s genes as the encode stage links them
    (:func:`clinicmm.encode.genomics.link_gene`): what the knowledge-pooled models' gene sets are built from.
    An arm or band column of a ``features: cytoband`` layer (``cnv:8q``) gets the list of the graph genes located
    in it (:func:`clinicmm.encode.genomics.feature_genes`).
    ``(None, None)`` without genomics, or for a ``model`` that does not pool
    (:func:`clinicmm.fusion.registry.pools_gene_sets`, given ``training.gene_set_input``)."""
    from clinicmm.fusion.registry import pools_gene_sets

    if genomics is None or (model is not None and not pools_gene_sets(model, gene_set_input)):
        return None, None
    from clinicmm.encode.genomics import REGION, GenomicsPreprocessor, feature_genes, link_gene

    pre = GenomicsPreprocessor.from_dict(genomics)
    graph_genes = set(kg.names(Node.GENE))
    out = []
    for name in [*pre.genes, *pre.mutation_genes]:
        gene, how = link_gene(name, graph_genes, pre.harmonize, pre.region_layers)
        if how == REGION:
            genes = feature_genes(name, graph_genes, pre.harmonize, pre.region_layers)
            out.append([int(kg.index(Node.GENE, g)) for g in genes] or -1)
            continue
        index = kg.index(Node.GENE, gene) if gene is not None else None
        out.append(-1 if index is None else int(index))
    return out, len(pre.genes)


def input_blocks(dims: dict[str, int], genomics: dict | None) -> list[str | None]:
    """The block of each input column of the linear model (``training.linear_blocks``): ``image``, ``note``, the
    ``genomics.layers`` table of each omics feature (``omics:<layer>`` for its ``<layer>:`` columns; the
    expression table's columns ``omics:expression``, whatever their names; ``omics:mutations`` for the flags), None
    for the presence flags."""
    omics: list[str | None] = ["omics"] * dims[Modality.OMICS.value]
    if genomics is not None:
        from clinicmm.encode.genomics import LAYER_PREFIX, GenomicsPreprocessor

        pre = GenomicsPreprocessor.from_dict(genomics)
        tables = [f"omics:{g.split(':', 1)[0]}" if LAYER_PREFIX.match(g) else "omics:expression" for g in pre.genes]
        named = tables + ["omics:mutations"] * len(pre.mutation_genes)
        omics = named if len(named) == len(omics) else omics
    out: list[str | None] = []
    for m in MODALITIES:
        out += omics if m == Modality.OMICS else [m.value] * dims[m.value]
    return out + [None] * len(MODALITIES)


def dims_of(vectors: dict[str, np.ndarray]) -> dict[str, int]:
    return {m.value: int(vectors[m.value].shape[1]) for m in MODALITIES}


def to_evidence(encoded, rows, labels, kg, scaler: Standardizer) -> list:
    """One ``PatientEvidence`` per row of ``encoded`` (label -1 where unknown)."""
    from clinicmm.fusion.batch import PatientEvidence

    out = []
    for r, y in zip(rows, labels):
        vec = {}
        for m in MODALITIES:
            v = encoded.vectors[m.value][r]
            vec[m.value] = None if np.isnan(v).any() else scaler.apply(m.value, v)
        links = {
            m.value: [
                i for i in (kg.index(LINK_NODE[m.value], name) for name in encoded.links[m.value][r]) if i is not None
            ]
            for m in MODALITIES
        }
        out.append(
            PatientEvidence(
                label=int(y),
                image=vec["image"],
                note=vec["note"],
                omics=vec["omics"],
                image_concepts=links["image"] if vec["image"] is not None else [],
                note_concepts=links["note"] if vec["note"] is not None else [],
                omics_genes=links["omics"] if vec["omics"] is not None else [],
            )
        )
    return out


# ------------------------------------------------------------------------------------ the stages' data


def need(path, stage: str):
    """``path``, or a StageError naming the command that writes it when it is missing."""
    if not path.exists():
        raise StageError(f"{path} is missing: run `clinicmm {stage}` (or `clinicmm run`) for this workflow first.")
    return path


class TrainingData:
    """Everything train, evaluate, compare, leave-one-site-out and robustness share: the cohort, its encodings, the
    graph, the classes and each patient's split. :meth:`fold` gives the same data as one fold sees it."""

    def __init__(self, wf):
        from clinicmm.encode.featurizer import load_encoded
        from clinicmm.ingest.cohort import Cohort
        from clinicmm.knowledge.graph import load_knowledge

        self.wf = wf
        self.cohort = Cohort.load(need(wf.work / "ingest", "ingest"))
        self.encoded = load_encoded(wf, need(wf.work / "encode", "encode"))
        self.kg = load_knowledge(wf)
        labels = self.cohort.manifest.set_index(Col.PATIENT.value)
        self.label = labels[Col.LABEL.value].to_dict()
        self.split = labels[Col.SPLIT.value].to_dict()
        self.classes = self.train_classes()
        if len(self.classes) < 2:
            raise StageError(f"{wf.dataset_path}: fewer than two labels in the train split; cannot train a classifier.")
        if unknown := add_class_nodes(self.kg, self.classes):
            logging.getLogger(__name__).warning(
                "label(s) %s name no cancer type of the knowledge graph (its codes, e.g. KIRC, their names, TCGA- "
                "projects or OncoTree codes): each gets a class node without edges, so the graph models learn nothing "
                "from the graph about them. Relabel with the graph's codes if they are cancer types.",
                ", ".join(map(repr, unknown[:10])),
            )
        enc_dir = wf.work / "encode"
        self.genomics = (
            json.loads((enc_dir / "genomics.json").read_text()) if (enc_dir / "genomics.json").is_file() else None
        )
        self.fingerprints = json.loads((enc_dir / "encoders.json").read_text())["fingerprints"]
        self.fitted_offsets: dict = {}  # training.offset's linear fits, shared by this data's corrected networks

    def train_classes(self) -> list[str]:
        """The labels of the train split's encoded patients, sorted: the classes a model of this split predicts."""
        return sorted({self.label[p] for p in self.encoded.patients if self.split.get(p) == Split.TRAIN})

    def rows(self, split: Split) -> tuple[list[int], list[int]]:
        idx = {c: i for i, c in enumerate(self.classes)}
        rows = [
            r for r, p in enumerate(self.encoded.patients) if self.split.get(p) == split and self.label.get(p) in idx
        ]
        return rows, [idx[self.label[self.encoded.patients[r]]] for r in rows]

    def items(self, split: Split, scaler):
        rows, y = self.rows(split)
        return to_evidence(self.encoded, rows, y, self.kg, scaler), np.array(y)

    def fold(self, split: dict[str, str], classes: list[str] | None = None) -> TrainingData:
        """This data as one fold sees it: ``split`` (patient -> train / val / test; others in none), the classes of
        its train split (or ``classes``), and the omics refitted on its train patients, so nothing fitted on data
        sees the fold's test patients. ``self`` is unchanged, apart from class nodes its graph gains."""
        out = copy.copy(self)
        out.split = dict(split)
        out.fitted_offsets = {}  # this fold's own (see clinicmm.training.fit.logreg_offset)
        out.cohort = copy.copy(self.cohort)
        manifest = self.cohort.manifest.copy()
        manifest[Col.SPLIT.value] = manifest[Col.PATIENT].map(out.split)
        out.cohort.manifest = manifest
        out.encoded = self._refit_omics(out)
        out.classes = list(classes) if classes is not None else out.train_classes()
        add_class_nodes(self.kg, out.classes)
        return out

    def _refit_omics(self, fold: TrainingData):
        """``fold``'s encodings with the omics block recomputed by a preprocessor fitted on its train patients."""
        from clinicmm.encode.featurizer import Featurizer
        from clinicmm.encode.genomics import fit_genomics

        pre = fit_genomics(self.wf, fold.cohort, [p for p, s in fold.split.items() if s == Split.TRAIN])
        if pre is None:
            return self.encoded
        fold.genomics = pre.to_dict()  # the features this fold's omics block holds (the pooled model's gene sets)
        present = self.cohort.manifest.set_index(Col.PATIENT.value).loc[self.encoded.patients, HAS[Modality.OMICS]]
        vectors, links, _ = Featurizer(self.wf.encoders, self.kg, pre).omics(
            self.encoded.patients, self.cohort.expression, self.cohort.mutations, present.to_numpy(dtype=bool)
        )
        out = copy.copy(self.encoded)
        out.vectors = {**self.encoded.vectors, Modality.OMICS.value: vectors}
        out.links = {**self.encoded.links, Modality.OMICS.value: links}
        return out
