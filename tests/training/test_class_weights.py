"""training.class_weights: balanced weights each class's training loss by n / (k x its count)."""

import numpy as np
import pytest
import torch

from clinicmm.config import TrainingSpec
from clinicmm.fusion.batch import PatientEvidence
from clinicmm.training.fit import balanced_weights
from clinicmm.training.module import FusionTask


def _items(labels):
    return [PatientEvidence(label=y, image=None, note=np.zeros(2, np.float32), omics=None) for y in labels]


def test_balanced_weights_give_every_present_class_the_same_total_weight():
    labels = [0] * 8 + [1] * 2 + [3] * 10  # class 2 absent from the training rows
    w = balanced_weights(_items(labels), 4)
    counts = np.bincount(labels, minlength=4)
    assert w[2] == 0.0
    totals = w * counts
    assert np.allclose(totals[counts > 0], totals[0]) and totals.sum() == pytest.approx(len(labels))


def test_the_task_weights_the_training_loss_and_not_the_validation_loss():
    class Fixed(torch.nn.Module):
        def forward(self, batch):
            return batch["logits"]

    logits, y = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 0, 1])
    batch = {"logits": logits, "patient": type("P", (), {"y": y})()}
    plain = FusionTask(Fixed(), TrainingSpec(), 2)
    weighted = FusionTask(Fixed(), TrainingSpec(), 2, class_weight=[0.75, 1.5])
    for task in (plain, weighted):
        task.log = lambda *a, **k: None
    loss_plain, loss_weighted = plain.training_step(batch, 0), weighted.training_step(batch, 0)
    expected = torch.nn.functional.cross_entropy(logits, y, weight=torch.tensor([0.75, 1.5]))
    assert loss_weighted == pytest.approx(float(expected)) and loss_weighted > loss_plain  # the rare class counts more
    assert weighted.state_dict()["class_weight"].tolist() == [0.75, 1.5]  # travels with the task's state
