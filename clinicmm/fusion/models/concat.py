"""Late-fusion baseline: project each modality, concatenate with the presence mask, classify with an MLP.

A missing (or dropped) modality is replaced by its own learned 'missing' embedding, and the presence mask is part
of the input, so the classifier can tell 'absent' apart from 'present but uninformative'.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import PATIENT, check_dims
from clinicmm.fusion.models.single import MODALITY_NAMES, ModalityEncoder, check_head_args, mlp_head, present_share


class ConcatFusion(nn.Module):
    """Concatenation fusion of the dense per-patient views ``x_image``, ``x_note``, ``x_omics`` and ``present``."""

    def __init__(self, dims: Mapping[str, int], n_classes: int, hidden: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        dims = check_dims(dims)
        check_head_args(n_classes, hidden, dropout)
        self.encoders = nn.ModuleDict({m: ModalityEncoder(dims[m], hidden) for m in MODALITY_NAMES})
        n = len(MODALITY_NAMES)
        self.head = mlp_head(n * hidden + n, hidden, n_classes, dropout)

    def forward(self, batch: HeteroData) -> Tensor:
        """(B, n_classes) logits."""
        store = batch[PATIENT]
        parts = [self.encoders[m](store[f"x_{m}"], store.present[:, i]) for i, m in enumerate(MODALITY_NAMES)]
        return self.head(torch.cat([*parts, store.present.float()], dim=1))

    def modality_weights(self, batch: HeteroData) -> Tensor:
        """(B, 3): equal share over the modalities the patient has (this model has no per-patient attribution)."""
        return present_share(batch)
