"""A network that corrects a logistic regression (``training.offset: logreg``).

:class:`LinearOffset`: logits = the closed-form logistic regression's logits (fitted first on the same training
rows, then frozen) + the network's logits, the network's output layer starting at zero. It is the Combined
Actuarial Neural Network of Wüthrich & Merz (2019, "nesting a GLM in a network"): training starts at the linear
model and the network learns what the linear model missed. Trained on the linear model's *in-sample* logits the
network sees almost no error to correct (a regularised linear model on a few hundred patients with thousands of
features fits its training rows nearly perfectly), so the training rows carry out-of-fold logits instead
(:func:`clinicmm.training.fit.out_of_fold_offsets`, stacking's cross-fitting); validation and serving use the
linear model fitted on all training rows.

It is a plain ``nn.Module`` over the same batch: it trains, calibrates, explains (``modality_weights``, and a
graph model's ``plan`` for leave-one-link-out) and serves like the model it wraps; the bundle records it
(``model.json``'s ``offset``) so the served model is rebuilt the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from clinicmm.fusion.batch import PATIENT
from clinicmm.fusion.models.single import present_share


def zero_output(net: nn.Module) -> nn.Module:
    """Zero the weights and bias of ``net``'s last ``nn.Linear`` (its output layer: every model here registers it
    last), so its logits start at zero, or at a constant for the graph models' class-node products."""
    last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if last:
        with torch.no_grad():
            last[-1].weight.zero_()
            if last[-1].bias is not None:
                last[-1].bias.zero_()
    return net


class LinearOffset(nn.Module):
    """``base(batch) + net(batch)``: ``base`` a fitted :class:`~clinicmm.fusion.models.linear.LinearFusion`, frozen;
    a batch whose patients carry ``offset`` (training rows: out-of-fold logits) uses those instead of ``base``."""

    def __init__(self, net: nn.Module, base: nn.Module) -> None:
        super().__init__()
        self.net = net
        # fitted, never trained here; a linear layer behaves alike in both modes, so it follows the wrapper's mode
        # (Lightning warns of modules left in eval mode when training starts)
        self.base = base.requires_grad_(False).train(self.training)

    def forward(self, batch: HeteroData) -> Tensor:
        """(B, n_classes) logits."""
        out = self.net(batch)
        store = batch[PATIENT]
        offset = store.offset if "offset" in store else self.base(batch)
        return offset.to(out.dtype) + out

    @property
    def plan(self):  # a graph model's message-passing plan, which leave-one-link-out explanations read
        if not hasattr(self.net, "plan"):
            raise AttributeError("plan")
        return self.net.plan

    def modality_weights(self, batch: HeteroData) -> Tensor:
        """The network's modality shares (the linear part has no per-patient attribution)."""
        return self.net.modality_weights(batch) if hasattr(self.net, "modality_weights") else present_share(batch)

    def modality_embeddings(self, batch: HeteroData) -> dict[str, Tensor]:
        """The network's per-modality embeddings (for ``training.contrastive_weight``)."""
        from clinicmm.fusion.contrastive import modality_embeddings

        return modality_embeddings(self.net, batch)


def offset_of(model: nn.Module) -> str:
    """``training.offset`` as ``model`` was built with it: 'logreg' for a :class:`LinearOffset`, else 'none'."""
    return "logreg" if isinstance(model, LinearOffset) else "none"
