"""Single-modality baseline: an MLP on one modality's embedding, a learned vector standing in when it is missing.

A patient without the modality gets the same learned 'missing' representation as every other such patient, so
the model can only predict (roughly) the class prior for them -- the honest baseline the fusion models must beat.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import PATIENT, check_dims
from clinicmm.keys import MODALITY_NAMES


def check_head_args(n_classes: int, hidden: int, dropout: float) -> None:
    """Validate the arguments every fusion model shares."""
    for name, value, low in (("n_classes", n_classes, 2), ("hidden", hidden, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"Expected {name} to be an int >= {low} (got {value!r})")
    if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"Expected dropout in [0, 1) (got {dropout!r})")


class ModalityEncoder(nn.Module):
    """LayerNorm + Linear + GELU of one modality's embedding; a learned vector for patients who lack it."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU())
        self.missing = nn.Parameter(torch.randn(hidden) * 0.1)

    def forward(self, x: Tensor, present: Tensor) -> Tensor:
        """(B, dim), (B,) bool -> (B, hidden)."""
        return torch.where(present.unsqueeze(1), self.project(x), self.missing.expand(x.size(0), -1))


def mlp_head(in_dim: int, hidden: int, n_classes: int, dropout: float) -> nn.Sequential:
    """Dropout -> Linear -> GELU -> Dropout -> Linear classifier."""
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
    )


def present_share(batch: HeteroData) -> Tensor:
    """(B, 3) share of each present modality (rows of patients with no modality are all zero)."""
    present = batch[PATIENT].present.float()
    return present / present.sum(1, keepdim=True).clamp_min(1.0)


class SingleModalityModel(nn.Module):
    """Predict the class from ``batch['patient'].x_<modality>`` alone."""

    def __init__(
        self, modality: str, dims: Mapping[str, int], n_classes: int, hidden: int = 64, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if modality not in MODALITY_NAMES:
            raise ValueError(f"Expected modality in {list(MODALITY_NAMES)} (got {modality!r})")
        dims = check_dims(dims)
        check_head_args(n_classes, hidden, dropout)
        self.modality = str(modality)
        self.index = MODALITY_NAMES.index(self.modality)
        self.encoder = ModalityEncoder(dims[self.modality], hidden)
        self.head = mlp_head(hidden, hidden, n_classes, dropout)

    def forward(self, batch: HeteroData) -> Tensor:
        """(B, n_classes) logits."""
        store = batch[PATIENT]
        return self.head(self.encoder(store[f"x_{self.modality}"], store.present[:, self.index]))

    def modality_weights(self, batch: HeteroData) -> Tensor:
        """(B, 3): one-hot on this model's modality; all zero for a patient who lacks it (no evidence used)."""
        weights = torch.zeros(batch[PATIENT].num_nodes, len(MODALITY_NAMES), device=batch[PATIENT].present.device)
        weights[:, self.index] = batch[PATIENT].present[:, self.index].float()
        return weights
