"""Attention-weighted fusion: project each modality, weigh the present ones by a learned score, classify the sum.

Each modality's embedding is projected to ``hidden`` (LayerNorm + Linear + GELU). A learned scoring vector gives
one attention logit per modality; missing (or dropped) modalities are masked to ``-inf`` before the softmax, so
they get exactly zero weight and the patient vector is a convex combination of the modalities the patient has.
The attention weights are the model's own per-patient attribution, returned by ``modality_weights``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import PATIENT, check_dims
from clinicmm.fusion.models.single import MODALITY_NAMES, check_head_args, mlp_head


class AttentionFusion(nn.Module):
    """Attention over the dense per-patient views ``x_image``, ``x_note``, ``x_omics`` masked by ``present``."""

    def __init__(self, dims: Mapping[str, int], n_classes: int, hidden: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        dims = check_dims(dims)
        check_head_args(n_classes, hidden, dropout)
        self.project = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(dims[m]), nn.Linear(dims[m], hidden), nn.GELU()) for m in MODALITY_NAMES}
        )
        self.score = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))
        self.head = mlp_head(hidden, hidden, n_classes, dropout)

    def _attend(self, batch: HeteroData) -> tuple[Tensor, Tensor]:
        """(B, 3, hidden) projected modalities and (B, 3) attention weights (zero where missing)."""
        store = batch[PATIENT]
        h = torch.stack([self.project[m](store[f"x_{m}"]) for m in MODALITY_NAMES], dim=1)
        present = store.present
        logits = (h @ self.score).masked_fill(~present, float("-inf"))
        # a patient with no modality gets a constant row (no NaN from an all -inf softmax), then all-zero weights
        logits = torch.where(present.any(1, keepdim=True), logits, torch.zeros_like(logits))
        return h, torch.softmax(logits, dim=1) * present.to(h.dtype)

    def forward(self, batch: HeteroData) -> Tensor:
        """(B, n_classes) logits."""
        h, weights = self._attend(batch)
        return self.head((weights.unsqueeze(2) * h).sum(1))

    def modality_weights(self, batch: HeteroData) -> Tensor:
        """(B, 3) attention weights: zero for missing modalities, rows sum to 1 for patients with any modality."""
        with torch.no_grad():
            return self._attend(batch)[1]
