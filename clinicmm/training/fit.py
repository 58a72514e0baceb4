"""The fit loop: a LightningModule around any fusion model, early stopping on the validation loss.

Every fusion model goes through the same loop (same splits, optimiser, early stopping, modality dropout), so
the comparison between single-modality, concatenation and graph fusion is fair.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clinicmm.config import TrainingSpec
from clinicmm.distributed import SPAWNING
from clinicmm.errors import ConfigError

def _lightning():
    import pytorch_lightning as pl

    # Lightning sets its loggers to INFO on import; its GPU/TPU banners and tips say nothing useful here
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return pl


def make_loader(items: list, knowledge, dims: dict[str, int], batch_size: int, sampler=None, p_drop: float = 0.0,
                seed: int = 0):
    """A DataLoader of batches (HeteroData) in ``sampler``'s order (else as listed); ``p_drop`` > 0 applies modality
    dropout, drawn from ``seed`` (training only)."""
    from torch.utils.data import DataLoader

    from clinicmm.fusion.batch import collate

    fn = collate(knowledge, dims, modality_dropout=p_drop, seed=seed)
    return DataLoader(items, batch_size=batch_size, sampler=sampler, collate_fn=fn, num_workers=0)


def graph_batches(model: torch.nn.Module, spec: TrainingSpec) -> None:
    """Give a graph model ``spec``'s cut threshold and neighbour sampling (other models have neither)."""
    if hasattr(model, "subgraph_min_edges"):  # graph models: batches of a large graph cut to their receptive field
        model.subgraph_min_edges, model.num_neighbors = spec.subgraph_min_edges, spec.num_neighbors


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
        y = batch["patient"].y
        loss = F.cross_entropy(self.model(batch), y)
        self.train_ce.update(loss.detach(), len(y))
        self.log("train_loss", loss, batch_size=len(y), prog_bar=False)
        if self.spec.contrastive_weight > 0:  # cross-modal alignment; train_loss stays the CE, comparable to val_loss
            from clinicmm.fusion.contrastive import contrastive_loss

            loss = loss + self.spec.contrastive_weight * contrastive_loss(self.model, batch, self.spec.contrastive_temperature)
        return loss

    def validation_step(self, batch, batch_idx):
        logits, y = self.model(batch).detach(), batch["patient"].y
        self.val_ce.update(F.cross_entropy(logits, y), len(y))
        self.val_f1.update(logits.argmax(1), y)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return self._reset_metrics()
        loss, f1 = float(self.val_ce.compute()), float(self.val_f1.compute())
        train_loss = float(self.train_ce.compute()) if self.train_ce.update_count else float("nan")
        self._reset_metrics()
        self.log("val_loss", loss, prog_bar=True, sync_dist=True)  # equal on every rank already
        self.history.append({"epoch": self.current_epoch, "train_loss": train_loss, "val_loss": loss, "val_macro_f1": f1})
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
        return torch.optim.AdamW(params, lr=self.spec.lr, weight_decay=self.spec.weight_decay, fused=fused)


class EpochCallback(_lightning().Callback):
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


def fit(model, train: list, val: list, knowledge, dims, spec: TrainingSpec, n_classes: int, on_epoch=None, progress=True,
        ckpt_dir: Path | None = None):
    """Train ``model`` with early stopping on val loss; returns the model at its best epoch and the history.

    The Trainer takes ``spec``'s accelerator / devices / num_nodes / strategy / precision. With ``ckpt_dir`` it
    keeps ``last.ckpt`` there after every epoch and resumes from it when present.
    """
    pl = _lightning()
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from clinicmm.training.datamodule import FusionData

    pl.seed_everything(spec.seed, workers=True, verbose=False)
    graph_batches(model, spec)
    task = FusionTask(model, spec, n_classes)
    spawns = spec.strategy.startswith(SPAWNING)  # the fit runs in child processes: log its epochs afterwards
    callbacks = [EarlyStopping(monitor="val_loss", mode="min", patience=spec.patience)]
    if on_epoch is not None and not spawns:
        callbacks.append(EpochCallback(on_epoch))
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, enable_version_counter=False))
    trainer = _trainer(pl, spec, callbacks, progress, checkpointing=ckpt_dir is not None)
    last = Path(ckpt_dir) / "last.ckpt" if ckpt_dir is not None else None
    resume = str(last) if last is not None and last.is_file() else None
    with warnings.catch_warnings():  # Lightning's own notice about a PyTorch internal, once per fit: noise
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(task, datamodule=FusionData(train, val, knowledge, dims, spec), ckpt_path=resume)
    if spawns and on_epoch is not None:
        for row in task.history:
            on_epoch(row)
    if task.best_state is not None:
        model.load_state_dict(task.best_state)
    return model.eval(), task.history


def _trainer(pl, spec: TrainingSpec, callbacks: list, progress: bool, checkpointing: bool):
    """A Trainer on ``spec``'s hardware settings; Lightning's refusal becomes a ConfigError naming the keys."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        return pl.Trainer(
            max_epochs=spec.max_epochs,
            accelerator=spec.accelerator,
            devices=spec.devices,
            num_nodes=spec.num_nodes,
            strategy=spec.strategy,
            precision=spec.precision,
            logger=False,  # MLflow logging is clinicmm.tracking's, from rank 0 only
            enable_checkpointing=checkpointing,
            enable_model_summary=False,
            enable_progress_bar=progress,
            callbacks=callbacks,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # FusionData splits by rank itself (same batches for any process count)
            deterministic=True if spec.accelerator == "cpu" else "warn",  # some CUDA scatter kernels have no deterministic twin
        )
    except (MisconfigurationException, ValueError, RuntimeError, ImportError) as exc:
        raise ConfigError(
            f"training: Lightning cannot use accelerator={spec.accelerator!r}, devices={spec.devices!r}, "
            f"num_nodes={spec.num_nodes}, strategy={spec.strategy!r}, precision={spec.precision!r} here ({exc}). "
            "Fix those keys of the workflow's training section."
        ) from None


@torch.inference_mode()
def predict_proba(model, items: list, knowledge, dims, batch_size: int = 64, without: str | None = None) -> np.ndarray:
    """Class probabilities (N, C) for a list of PatientEvidence; ``without``: that modality removed from every
    batch (:func:`clinicmm.fusion.batch.without_modality`), as a patient lacking it looks to the model."""
    from clinicmm.fusion.batch import without_modality

    model.eval()
    batches = make_loader(items, knowledge, dict(dims), batch_size)
    out = [torch.softmax(model(without_modality(b, without) if without else b), dim=1) for b in batches]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
