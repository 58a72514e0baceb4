"""training.warmup_epochs / training.schedule: linear warmup, then a cosine decay to 0 at max_epochs (per epoch)."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from clinicmm.config import TrainingSpec
from clinicmm.training.module import FusionTask, lightning, lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_factor_rises_during_warmup_peaks_and_then_decays_to_zero():
    rising = [lr_factor(3, 10, "cosine", e) for e in range(3)]
    assert rising == pytest.approx([0.25, 0.5, 0.75])
    assert lr_factor(3, 10, "cosine", 3) == 1.0  # the peak: training.lr itself
    decay = [lr_factor(3, 10, "cosine", e) for e in range(3, 10)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 6 / 7))) and lr_factor(3, 10, "cosine", 10) == 0
    assert [lr_factor(2, 10, "constant", e) for e in range(5)] == pytest.approx([1 / 3, 2 / 3, 1, 1, 1])


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, batch):
        return self.lin(batch["x"])


def _loader(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)
    batches = [{"x": x[i : i + 8], "patient": SimpleNamespace(y=y[i : i + 8])} for i in range(0, n, 8)]
    return torch.utils.data.DataLoader(batches, batch_size=None)


def _lrs_of_a_tiny_fit(spec: TrainingSpec) -> list[float]:
    """The optimizer's learning rate at the start of each epoch of a real Lightning fit of a FusionTask."""
    pl = lightning()
    seen: list[float] = []

    class Record(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    task = FusionTask(_Linear(), spec, 2)
    trainer = pl.Trainer(
        max_epochs=spec.max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Record()],
    )
    with warnings.catch_warnings():  # Lightning's advice about DataLoader workers and the like
        warnings.simplefilter("ignore")
        trainer.fit(task, train_dataloaders=_loader(32, 0), val_dataloaders=_loader(16, 1))
    return seen


def test_a_fit_warms_the_lr_up_then_decays_it_by_a_cosine():
    spec = TrainingSpec(max_epochs=8, warmup_epochs=3, schedule="cosine", lr=1e-2, seed=0)
    lrs = _lrs_of_a_tiny_fit(spec)
    assert len(lrs) == 8
    assert lrs == pytest.approx([1e-2 * lr_factor(3, 8, "cosine", e) for e in range(8)])
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(1e-2)  # rises during the warmup to training.lr
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:], strict=False)) and lrs[-1] < 0.1 * 1e-2  # decays after


def test_a_constant_schedule_without_warmup_keeps_the_lr():
    lrs = _lrs_of_a_tiny_fit(TrainingSpec(max_epochs=4, warmup_epochs=0, schedule="constant", lr=1e-2, seed=0))
    assert lrs == pytest.approx([1e-2] * 4)
