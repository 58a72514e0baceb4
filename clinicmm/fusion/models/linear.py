"""Multinomial logistic regression on the concatenated modality embeddings: the strong, simple baseline.

On small real cohorts (a few hundred patients) a regularised linear model on good embeddings is hard to beat, so
it is a model like any other here: trained on the same rows, calibrated, evaluated, registered and served the same
way, and chosen as the champion when validation says it is best (``primary_model: auto``).

Input: each modality's standardised embedding (zeros where the patient lacks it, i.e. the training mean) followed
by the presence mask, so a missing modality is 'mean + indicator' as in scikit-learn's
``SimpleImputer(add_indicator=True)``. It is not trained by gradient steps: :mod:`clinicmm.training.linear` fits
it in closed form (L2 penalty chosen by inner cross-validation on the training rows) and writes the coefficients
into ``linear``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import PATIENT, check_dims
from clinicmm.fusion.models.single import MODALITY_NAMES, check_head_args, present_share


class LinearFusion(nn.Module):
    """Logits ``W [x_image, x_note, x_omics, present] + b`` over the dense per-patient views of a batch."""

    closed_form = True  # fitted by clinicmm.training.linear.fit_linear, not by the Lightning loop

    def __init__(self, dims: Mapping[str, int], n_classes: int, hidden: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        dims = check_dims(dims)
        check_head_args(n_classes, hidden, dropout)  # hidden and dropout are unused: the shared signature
        self.linear = nn.Linear(sum(dims[m] for m in MODALITY_NAMES) + len(MODALITY_NAMES), n_classes)
        # training.linear_blocks: equal -> a per-column scale fitted with the coefficients (each modality and omics
        # layer one block of equal total variance on the training rows); empty: every column as it is
        self.register_buffer("scale", torch.ones(0))
        self.blocks: list[str | None] | None = None  # the block of each input column, set before the fit

    @staticmethod
    def features(batch: HeteroData) -> Tensor:
        """(B, sum of dims + 3): each modality's embedding (zeros where absent) and the presence mask."""
        store = batch[PATIENT]
        present = store.present
        parts = [store[f"x_{m}"] * present[:, i : i + 1] for i, m in enumerate(MODALITY_NAMES)]
        return torch.cat([*parts, present.float()], dim=1)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    def forward(self, batch: HeteroData) -> Tensor:
        """(B, n_classes) logits."""
        return self.logits(self.features(batch))

    def logits(self, x: Tensor) -> Tensor:
        """(B, n_classes) logits of the feature rows ``x`` (B, in_features), each column times its block's scale."""
        x = x.to(self.linear.weight.dtype)
        return self.linear(x * self.scale.to(x.dtype) if self.scale.numel() else x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "scale"
        if key not in state_dict:  # a model saved before block scales: every column as it is
            state_dict[key] = torch.ones(0)
        self.scale = torch.empty_like(state_dict[key])  # the fitted scale's size, before the copy
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def modality_weights(self, batch: HeteroData) -> Tensor:
        """(B, 3): equal share over the modalities the patient has (no per-patient attribution)."""
        return present_share(batch)
