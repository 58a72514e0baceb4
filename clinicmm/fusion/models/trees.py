"""Gradient-boosted trees on the concatenated modality embeddings: the strong tabular baseline beside logreg.

Small real cohorts with wide omics tables are where boosted trees often beat neural models, so they are a model
like any other here: trained on the same rows, calibrated, evaluated, registered, served and chosen as the
champion when validation says so (``primary_model: auto``). Input: the same features as
:class:`~clinicmm.fusion.models.linear.LinearFusion` (each standardised embedding, zeros where absent, then the
presence mask).

The trees are fitted by scikit-learn (:mod:`clinicmm.training.trees`) and then held here as tensors, so the model
saves as safetensors, loads without pickle and predicts in torch like every other model: each tree is a flat node
table (feature, threshold, left, right, value; a leaf points to itself), evaluated for a whole batch by ``depth``
steps of "go left when ``x[feature] <= threshold``" (scikit-learn's rule, compared in float64 as it does).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import check_dims
from clinicmm.fusion.models.linear import LinearFusion
from clinicmm.fusion.models.single import MODALITY_NAMES, check_head_args, present_share

TREE_BUFFERS = ("feature", "threshold", "left", "right", "value", "tree_class", "bias", "depth")


class TreeFusion(nn.Module):
    """Logits ``bias + sum of the trees' leaf values`` (per class) over the dense per-patient views of a batch."""

    closed_form = "trees"  # fitted by clinicmm.training.trees.fit_trees, not by the Lightning loop

    def __init__(self, dims: Mapping[str, int], n_classes: int, hidden: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        dims = check_dims(dims)
        check_head_args(n_classes, hidden, dropout)  # hidden and dropout are unused: the shared signature
        self.in_features = sum(dims[m] for m in MODALITY_NAMES) + len(MODALITY_NAMES)
        self.n_classes = n_classes
        self.set_trees(
            feature=torch.zeros(0, 1, dtype=torch.long),
            threshold=torch.zeros(0, 1, dtype=torch.float64),
            left=torch.zeros(0, 1, dtype=torch.long),
            right=torch.zeros(0, 1, dtype=torch.long),
            value=torch.zeros(0, 1, dtype=torch.float64),
            tree_class=torch.zeros(0, dtype=torch.long),
            bias=torch.zeros(n_classes, dtype=torch.float64),
            depth=torch.zeros((), dtype=torch.long),
        )

    def set_trees(self, **tensors: Tensor) -> None:
        """Replace the node tables (``(trees, nodes)`` each; ``tree_class``: the class each tree adds to)."""
        if set(tensors) != set(TREE_BUFFERS):
            raise ValueError(f"set_trees needs exactly {TREE_BUFFERS}")
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in TREE_BUFFERS:  # the node tables' shapes come from the fit: take the saved ones
            if prefix + name in state_dict:
                self.register_buffer(name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    features = staticmethod(LinearFusion.features)

    def forward(self, batch: HeteroData) -> Tensor:
        """(B, n_classes) logits."""
        return self.logits(self.features(batch))

    def logits(self, x: Tensor) -> Tensor:
        """(B, n_classes) logits of the feature rows ``x`` (B, in_features)."""
        x = x.to(torch.float64)
        n_trees = self.feature.shape[0]
        out = self.bias.expand(x.shape[0], -1).clone()
        if n_trees:
            trees = torch.arange(n_trees, device=x.device)[None, :]
            node = torch.zeros(x.shape[0], n_trees, dtype=torch.long, device=x.device)
            for _ in range(int(self.depth)):
                value = x.gather(1, self.feature[trees, node])
                go_left = value <= self.threshold[trees, node]  # features are finite: no missing-value rule
                node = torch.where(go_left, self.left[trees, node], self.right[trees, node])
            out = out.index_add(1, self.tree_class, self.value[trees, node])
        return out.to(torch.float32)

    def modality_weights(self, batch: HeteroData) -> Tensor:
        """(B, 3): equal share over the modalities the patient has (no per-patient attribution)."""
        return present_share(batch)
