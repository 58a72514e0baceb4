"""The fit loop: a LightningModule around any fusion model, early stopping on the validation loss.

Every fusion model goes through the same loop (same splits, optimiser, early stopping, modality dropout), so
the comparison between single-modality, concatenation and graph fusion is fair.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from clinicmm.config import TrainingSpec

def _lightning():
    import pytorch_lightning as pl

    # Lightning sets its loggers to INFO on import; its GPU/TPU banners and tips say nothing useful here
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return pl


def make_loader(items: list, knowledge, dims: dict[str, int], batch_size: int, shuffle: bool, p_drop: float = 0.0, seed: int = 0):
    """A DataLoader of batches (HeteroData); ``p_drop`` > 0 applies modality dropout (training only)."""
    from torch.utils.data import DataLoader

    from clinicmm.fusion.batch import collate

    gen = torch.Generator().manual_seed(seed)
    fn = collate(knowledge, dims, modality_dropout=p_drop, seed=seed)
    return DataLoader(items, batch_size=batch_size, shuffle=shuffle, collate_fn=fn, generator=gen, num_workers=0)


class FusionTask(_lightning().LightningModule):
    """Cross-entropy training of a fusion model; keeps the weights of the best validation epoch."""

    def __init__(self, model: torch.nn.Module, spec: TrainingSpec, n_classes: int):
        super().__init__()
        self.model = model
        self.spec = spec
        self.n_classes = n_classes
        self.history: list[dict[str, float]] = []
        self.best_state: dict | None = None
        self.best_loss = float("inf")
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._train_losses: list[float] = []

    def forward(self, batch):
        return self.model(batch)

    def training_step(self, batch, batch_idx):
        y = batch["patient"].y
        loss = F.cross_entropy(self.model(batch), y)
        self._train_losses.append(float(loss.detach()))
        self.log("train_loss", loss, batch_size=len(y), prog_bar=False)
        return loss

    def validation_step(self, batch, batch_idx):
        self._val.append((self.model(batch).detach(), batch["patient"].y))

    def on_validation_epoch_end(self):
        from torchmetrics.functional.classification import multiclass_f1_score

        if not self._val or self.trainer.sanity_checking:
            self._val.clear()
            return
        logits = torch.cat([v[0] for v in self._val])
        y = torch.cat([v[1] for v in self._val])
        self._val.clear()
        loss = float(F.cross_entropy(logits, y))
        f1 = float(multiclass_f1_score(logits.argmax(1), y, num_classes=self.n_classes, average="macro"))
        train_loss = float(np.mean(self._train_losses)) if self._train_losses else float("nan")
        self._train_losses.clear()
        self.log("val_loss", loss, prog_bar=True)
        self.history.append({"epoch": self.current_epoch, "train_loss": train_loss, "val_loss": loss, "val_macro_f1": f1})
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = copy.deepcopy(self.model.state_dict())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.parameters(), lr=self.spec.lr, weight_decay=self.spec.weight_decay)


class EpochCallback(_lightning().Callback):
    """Hands each finished epoch's row of history to ``on_epoch`` (e.g. to log it to MLflow)."""

    def __init__(self, on_epoch: Callable[[dict[str, float]], None]):
        self.on_epoch = on_epoch
        self._seen = 0

    def on_validation_end(self, trainer, pl_module):  # runs after the module's own epoch-end hook
        if trainer.sanity_checking:
            return
        for row in pl_module.history[self._seen :]:
            self.on_epoch(row)
        self._seen = len(pl_module.history)


def fit(model, train: list, val: list, knowledge, dims, spec: TrainingSpec, n_classes: int, on_epoch=None, progress=True):
    """Train ``model`` with early stopping on val loss; returns the model at its best epoch and the history."""
    pl = _lightning()
    from pytorch_lightning.callbacks import EarlyStopping

    pl.seed_everything(spec.seed, workers=True, verbose=False)
    task = FusionTask(model, spec, n_classes)
    callbacks = [EarlyStopping(monitor="val_loss", mode="min", patience=spec.patience)]
    if on_epoch is not None:
        callbacks.append(EpochCallback(on_epoch))
    trainer = pl.Trainer(
        max_epochs=spec.max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    train_loader = make_loader(train, knowledge, dims, spec.batch_size, True, spec.modality_dropout, spec.seed)
    val_loader = make_loader(val, knowledge, dims, max(len(val), 1), False)
    trainer.fit(task, train_loader, val_loader)
    if task.best_state is not None:
        model.load_state_dict(task.best_state)
    return model.eval(), task.history


@torch.inference_mode()
def predict_proba(model, items: list, knowledge, dims, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, C) for a list of PatientEvidence."""
    model.eval()
    out = [torch.softmax(model(b), dim=1) for b in make_loader(items, knowledge, dims, batch_size, False)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
