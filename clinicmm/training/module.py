"""The LightningModule every fusion model trains in (cross-entropy, best-epoch weights) and its epoch callback."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from clinicmm.config import TrainingSpec


def lightning():
    import pytorch_lightning as pl

    # Lightning sets its loggers to INFO on import; its GPU/TPU banners and tips say nothing useful here
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return pl


class FusionTask(lightning().LightningModule):
    """Cross-entropy training of a fusion model; keeps the weights of the best validation epoch."""

    def __init__(
        self, model: torch.nn.Module, spec: TrainingSpec, n_classes: int, class_weight=None, keep_start: bool = False
    ):
        super().__init__()
        self.model = model
        # training.keep_start: the Trainer's sanity pass scores the model as it starts (a network correcting logreg:
        # the linear model) on the whole validation split; that is a candidate best state, recorded as epoch -1
        self.keep_start = keep_start
        # training.class_weights: balanced -> each class's loss weighted by n / (k * its count); the val loss stays plain
        self.register_buffer("class_weight", None if class_weight is None else torch.as_tensor(class_weight).float())
        self.spec = spec
        self.n_classes = n_classes
        self.history: list[dict[str, float]] = []
        self.best_state: dict | None = None
        self.best_loss = float("inf")
        self._resumed_stopped = False
        from torchmetrics import MeanMetric
        from torchmetrics.classification import MulticlassF1Score

        # torchmetrics reduces these across ranks at compute(): under DDP every rank sees the whole split's figures
        self.train_ce = MeanMetric()
        self.val_ce = MeanMetric()
        self.val_f1 = MulticlassF1Score(num_classes=n_classes, average="macro")

    def forward(self, batch):
        return self.model(batch)

    def training_step(self, batch, batch_idx):
        from clinicmm.fusion.models.wrappers import members_of

        y = batch["patient"].y
        # an ensemble's members each learn on their own loss (training.ensemble); the mean keeps train_loss per network
        members = members_of(self.model)
        loss = torch.stack([F.cross_entropy(m(batch), y, weight=self.class_weight) for m in members]).mean()
        self.train_ce.update(loss.detach(), len(y))
        self.log("train_loss", loss, batch_size=len(y), prog_bar=False)
        if self.spec.contrastive_weight > 0:  # cross-modal alignment; train_loss stays the CE, comparable to val_loss
            from clinicmm.fusion.contrastive import contrastive_loss

            aligned = torch.stack([contrastive_loss(m, batch, self.spec.contrastive_temperature) for m in members])
            loss = loss + self.spec.contrastive_weight * aligned.mean()
        return loss

    def validation_step(self, batch, batch_idx):
        logits, y = self.model(batch).detach(), batch["patient"].y
        self.val_ce.update(F.cross_entropy(logits, y), len(y))
        self.val_f1.update(logits.argmax(1), y)

    def on_validation_epoch_end(self):
        start = self.trainer.sanity_checking
        if start and (not self.keep_start or self.history):  # a resumed fit has scored its start already
            return self._reset_metrics()
        loss, f1 = float(self.val_ce.compute()), float(self.val_f1.compute())
        train_loss = float(self.train_ce.compute()) if self.train_ce.update_count and not start else float("nan")
        self._reset_metrics()
        if not start:  # early stopping counts trained epochs only
            self.log("val_loss", loss, prog_bar=True, sync_dist=True)  # equal on every rank already
        self.history.append(
            {
                "epoch": -1 if start else self.current_epoch,
                "train_loss": train_loss,
                "val_loss": loss,
                "val_macro_f1": f1,
            }
        )
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = copy.deepcopy(self.model.state_dict())

    def _reset_metrics(self) -> None:
        for metric in (self.train_ce, self.val_ce, self.val_f1):
            metric.reset()

    def get_extra_state(self) -> dict:
        """History, best weights and the early-stop flag travel in Lightning checkpoints (so a resumed fit goes on
        where it stopped) and in the state_dict that ``ddp_spawn`` hands back to the main process."""
        stopped = bool(self._trainer is not None and self._trainer.should_stop)
        return {"history": self.history, "best_loss": self.best_loss, "best_state": self.best_state, "stopped": stopped}

    def set_extra_state(self, state: dict) -> None:
        self.history, self.best_loss = list(state["history"]), float(state["best_loss"])
        self.best_state, self._resumed_stopped = state["best_state"], bool(state["stopped"])

    def on_train_start(self) -> None:
        if self._resumed_stopped:  # resumed from the checkpoint of a fit that had already stopped early
            self.trainer.should_stop = True

    def configure_optimizers(self):
        params = list(self.model.parameters())
        fused = all(p.device.type in ("cpu", "cuda") for p in params)  # one kernel for all tensors, same update
        optimizer = torch.optim.AdamW(params, lr=self.spec.lr, weight_decay=self.spec.weight_decay, fused=fused)
        if self.spec.schedule == "constant" and not self.spec.warmup_epochs:
            return optimizer
        factor = partial(lr_factor, self.spec.warmup_epochs, self.spec.max_epochs, self.spec.schedule)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def lr_factor(warmup: int, max_epochs: int, schedule: str, epoch: int) -> float:
    """Multiplier of ``training.lr`` in 0-based ``epoch``: linear warmup ``(e+1)/(warmup+1)`` over the first
    ``warmup`` epochs, then 1 (``constant``) or a cosine from 1 down to 0 at ``max_epochs`` (``cosine``)."""
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(epoch - warmup, max_epochs - warmup) / max(1, max_epochs - warmup)))


class EpochCallback(lightning().Callback):
    """Hands each finished epoch's row of history to ``on_epoch`` (e.g. to log it to MLflow)."""

    def __init__(self, on_epoch: Callable[[dict[str, float]], None]):
        self.on_epoch = on_epoch
        self._seen = 0

    def on_validation_end(self, trainer, pl_module):  # runs after the module's own epoch-end hook
        if trainer.sanity_checking or not trainer.is_global_zero:  # one process logs
            return
        for row in pl_module.history[self._seen :]:
            self.on_epoch(row)
        self._seen = len(pl_module.history)
