"""From encoded patients to the fusion models' inputs: standardised vectors and graph-node indices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clinicmm.keys import MODALITIES, Node

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


def class_nodes(kg, classes: list[str]):
    """The cancer_type node index of each class, in class order (LongTensor): what the KG-GNN scores against."""
    import torch

    return torch.tensor([kg.index(Node.CANCER, c) for c in classes], dtype=torch.long)


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
            m.value: [i for i in (kg.index(LINK_NODE[m.value], name) for name in encoded.links[m.value][r]) if i is not None]
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
