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

:class:`SeedEnsemble` (``training.ensemble``): several such networks from different initial weights, predicting
with their mean probability.
"""

from __future__ import annotations

import math

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
        return modality_weights_of(self.net, batch)

    def modality_embeddings(self, batch: HeteroData) -> dict[str, Tensor]:
        """The network's per-modality embeddings (for ``training.contrastive_weight``)."""
        from clinicmm.fusion.contrastive import modality_embeddings

        return modality_embeddings(self.net, batch)


class SeedEnsemble(nn.Module):
    """``training.ensemble``: several copies of one network, each from its own initial weights (seeds ``seed``,
    ``seed + 1`` …), trained side by side on the same batches, each on its own cross-entropy, and predicting with
    the mean of their probabilities (a deep ensemble, Lakshminarayanan et al. 2017).

    Why: on a few hundred patients one network's result depends on its initial weights; the mean of several depends
    on them less (measured here: no consistent gain in macro-F1 or calibration, so the default is one network; README,
    *Seed ensembles*). Early stopping and the best epoch are the ensemble's (its validation
    loss), so it trains, calibrates, explains and serves as one model; the bundle records the member count
    (``model.json``'s ``ensemble``). Every training and scoring step runs every member; the batches are shared.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("SeedEnsemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, batch: HeteroData) -> Tensor:
        """(B, n_classes) logits: the log of the members' mean probabilities (their softmax is that mean)."""
        logp = torch.stack([torch.log_softmax(m(batch), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))

    @property
    def plan(self):  # the members share one graph, so one message-passing plan (leave-one-link-out reads it)
        if not hasattr(self.members[0], "plan"):
            raise AttributeError("plan")
        return self.members[0].plan

    def modality_weights(self, batch: HeteroData) -> Tensor:
        """The members' mean modality shares."""
        return torch.stack([modality_weights_of(m, batch) for m in self.members]).mean(0)


def modality_weights_of(model: nn.Module, batch: HeteroData) -> Tensor:
    """(B, modalities) shares of each modality in ``model``'s prediction: its own ``modality_weights`` where it has
    them, else each present modality's equal share."""
    return model.modality_weights(batch) if hasattr(model, "modality_weights") else present_share(batch)


def members_of(model: nn.Module) -> list[nn.Module]:
    """The networks that train on their own loss: a :class:`SeedEnsemble`'s members, else ``[model]``."""
    return list(model.members) if isinstance(model, SeedEnsemble) else [model]


def ensemble_of(model: nn.Module) -> int:
    """``training.ensemble`` as ``model`` was built with it: its member count (1 for a single network)."""
    return len(members_of(model))


def offset_of(model: nn.Module) -> str:
    """``training.offset`` as ``model`` was built with it: 'logreg' for a :class:`LinearOffset` (or an ensemble of
    them), else 'none'."""
    return "logreg" if isinstance(members_of(model)[0], LinearOffset) else "none"


def networks_of(model: nn.Module) -> list[nn.Module]:
    """Each member's own network (:func:`members_of`, unwrapped from its :class:`LinearOffset`)."""
    return [m.net if isinstance(m, LinearOffset) else m for m in members_of(model)]


def reads_gene_sets(model: nn.Module) -> bool:
    """``training.gene_set_input`` as ``model`` was built with it: whether its network has a gene-set read-in."""
    return getattr(networks_of(model)[0], "gene_sets", None) is not None
