"""Cross-modal contrastive alignment: an auxiliary InfoNCE loss between one patient's modality embeddings.

For every pair of modalities (image-note, image-omics, note-omics), the patients of the batch who have both give
a ``B' x B'`` similarity matrix of their L2-normalised embeddings; each patient's own other-modality embedding is
the positive and the other patients' are the negatives, in both directions (CLIP's symmetric loss). The pair
losses are averaged. A patient who lacks a modality (or had it removed by modality dropout) takes no part in that
modality's pairs, and a pair with fewer than two such patients has no negatives and is skipped.

Which embedding counts as "the model's" is fixed here, per model class, from the submodule that turns a
modality's input into the model's hidden space: ``ConcatFusion.encoders[m]``, ``AttentionFusion.project[m]``,
the KG models' evidence projection ``evidence[<node>]``. A model may also define its own
``modality_embeddings(batch) -> {modality: (B, d)}``, which then wins. Single-modality models have one modality
and no pairs: the loss is zero for them. The training loop adds ``contrastive_weight * loss`` to the
cross-entropy (``TrainingSpec.contrastive_weight``, 0 = off).
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import PATIENT
from clinicmm.keys import EVIDENCE_NODE, MODALITIES, MODALITY_NAMES


def modality_embeddings(model: nn.Module, batch: HeteroData) -> dict[str, Tensor]:
    """``{modality: (B, d)}`` per-patient embeddings in the model's hidden space (rows of absent patients are junk;
    mask them with ``batch['patient'].present``). Empty for a model with fewer than two modalities."""
    own = getattr(model, "modality_embeddings", None)
    if callable(own):
        return own(batch)
    store = batch[PATIENT]
    if isinstance(getattr(model, "encoders", None), nn.ModuleDict):  # ConcatFusion
        return {m: model.encoders[m].project(store[f"x_{m}"]) for m in MODALITY_NAMES if m in model.encoders}
    if isinstance(getattr(model, "project", None), nn.ModuleDict):  # AttentionFusion
        return {m: model.project[m](store[f"x_{m}"]) for m in MODALITY_NAMES if m in model.project}
    if isinstance(getattr(model, "evidence", None), nn.ModuleDict):  # KGGNNFusion and KGRGCNFusion
        nodes = {m.value: EVIDENCE_NODE[m].value for m in MODALITIES}
        return {m: model.evidence[nodes[m]](store[f"x_{m}"]) for m in MODALITY_NAMES if nodes[m] in model.evidence}
    return {}


def info_nce(a: Tensor, b: Tensor, temperature: float = 0.1) -> Tensor:
    """Symmetric InfoNCE of paired rows ``a[i] <-> b[i]`` ((N, d) each, N >= 2): row i of ``a`` should be most
    similar to row i of ``b`` among all rows of ``b``, and vice versa."""
    if a.dim() != 2 or a.shape != b.shape or a.size(0) < 2:
        raise ValueError(
            f"Expected two (N, d) tensors of the same shape with N >= 2 (got {tuple(a.shape)}, {tuple(b.shape)})"
        )
    if not temperature > 0:
        raise ValueError(f"Expected a positive temperature (got {temperature!r})")
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    target = torch.arange(a.size(0), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def pairwise_info_nce(embeddings: dict[str, Tensor], present: Tensor, temperature: float = 0.1) -> Tensor:
    """Mean :func:`info_nce` over the modality pairs that at least two patients of the batch both have.

    ``present`` is the batch's (B, 3) mask in the order of ``clinicmm.keys.MODALITIES``. Returns a zero that still
    belongs to the graph when no pair qualifies, so the caller can always add it to the loss.
    """
    losses = []
    for m1, m2 in combinations([m for m in MODALITY_NAMES if m in embeddings], 2):
        both = present[:, MODALITY_NAMES.index(m1)] & present[:, MODALITY_NAMES.index(m2)]
        if int(both.sum()) >= 2:
            losses.append(info_nce(embeddings[m1][both], embeddings[m2][both], temperature))
    if losses:
        return torch.stack(losses).mean()
    anchor = next(iter(embeddings.values()), None)
    return anchor.sum() * 0.0 if anchor is not None else present.new_zeros((), dtype=torch.float32)


def contrastive_loss(model: nn.Module, batch: HeteroData, temperature: float = 0.1) -> Tensor:
    """The auxiliary loss of one training batch: :func:`pairwise_info_nce` of the model's modality embeddings."""
    return pairwise_info_nce(modality_embeddings(model, batch), batch[PATIENT].present, temperature)
