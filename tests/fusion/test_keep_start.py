"""training.keep_start: a network that corrects logreg may stop where it started. Its validation loss before any
training (the linear model's) is scored on the whole validation split as epoch -1, and when no trained epoch beats
it the fitted model is the linear model exactly; a correction that helps is kept."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_fusion_models import DIMS, N_CLASSES, knowledge, make

from clinicmm.config import TrainingSpec
from clinicmm.fusion.batch import PatientEvidence, build_batch
from clinicmm.fusion.models.wrappers import LinearOffset, zero_output
from clinicmm.training.fit import best_epoch, fit, fit_closed_form, trained_epochs

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


def _patients(n: int, seed: int, shuffled: bool = False) -> list[PatientEvidence]:
    """Class i % 4, its omics a noisy one-hot of the class; ``shuffled``: the labels permuted (nothing to learn)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % N_CLASSES
    omics = (np.eye(DIMS["omics"])[labels] * 1.5 + rng.normal(0, 1.0, (n, DIMS["omics"]))).astype(np.float32)
    if shuffled:
        labels = rng.permutation(labels)
    return [PatientEvidence(label=int(y), omics=x) for y, x in zip(labels, omics)]


def _spec(**overrides) -> TrainingSpec:
    return TrainingSpec(
        **{"seed": 0, "max_epochs": 8, "patience": 8, "hidden": 16, "batch_size": 16, "warmup_epochs": 0, "lr": 0.01}
        | overrides
    )


def _logreg(items: list[PatientEvidence], spec: TrainingSpec):
    base = make("logreg")
    fit_closed_form(base, items, [], knowledge(), DIMS, spec, N_CLASSES)
    return base


def _logits(model, items):
    batch = build_batch(knowledge(), items, dict(DIMS))
    with torch.no_grad():
        return model.eval()(batch), batch["patient"].y


def _fit(base, train, val, spec, **kwargs):
    model = LinearOffset(zero_output(make("concat", dropout=0.0)), copy.deepcopy(base))
    return fit(model, train, val, knowledge(), dict(DIMS), spec, N_CLASSES, progress=False, **kwargs)


def test_a_correction_worse_on_validation_than_none_is_not_kept() -> None:
    spec = _spec()
    informative = _patients(80, seed=1)
    base = _logreg(informative, spec)  # right on most patients of the class structure
    train, val = _patients(80, seed=1, shuffled=True), _patients(40, seed=2)  # the network can only learn noise
    model, history = _fit(base, train, val, spec)
    start_logits, y = _logits(base, val)
    assert history[0]["epoch"] == -1 and np.isnan(history[0]["train_loss"])
    assert history[0]["val_loss"] == pytest.approx(float(F.cross_entropy(start_logits, y)), rel=1e-5)
    assert trained_epochs(history) == 8 and min(h["val_loss"] for h in history[1:]) > history[0]["val_loss"]
    assert best_epoch(history) == -1
    fitted, _ = _logits(model, val)
    assert torch.allclose(fitted, start_logits, atol=1e-6)  # the linear model, exactly

    off, off_history = _fit(base, train, val, spec.model_copy(update={"keep_start": False}))
    assert [h["epoch"] for h in off_history] == list(range(8))  # as before: trained epochs only
    assert not torch.allclose(_logits(off, val)[0], start_logits, atol=1e-3)  # an epoch of noise kept


def test_a_correction_that_helps_on_validation_is_kept() -> None:
    spec = _spec()
    train, val = _patients(80, seed=1), _patients(40, seed=2)
    weak = _logreg(_patients(80, seed=3, shuffled=True), spec)  # a linear model fitted on labels it cannot learn
    model, history = _fit(weak, train, val, spec)
    assert history[0]["epoch"] == -1 and best_epoch(history) >= 0
    fitted, y = _logits(model, val)
    start, _ = _logits(weak, val)
    assert F.cross_entropy(fitted, y) < F.cross_entropy(start, y)


def test_a_resumed_fit_scores_its_start_once(tmp_path) -> None:
    spec = _spec(max_epochs=3)
    base = _logreg(_patients(80, seed=1), spec)
    train, val = _patients(80, seed=1, shuffled=True), _patients(40, seed=2)
    _, first = _fit(base, train, val, spec, ckpt_dir=tmp_path)
    _, resumed = _fit(base, train, val, spec.model_copy(update={"max_epochs": 5}), ckpt_dir=tmp_path)
    assert [h["epoch"] for h in first] == [-1, 0, 1, 2]
    assert [h["epoch"] for h in resumed] == [-1, 0, 1, 2, 3, 4]
    assert [h["val_loss"] for h in resumed[:4]] == [h["val_loss"] for h in first]


def test_networks_alone_do_not_score_their_random_start() -> None:
    spec = _spec(max_epochs=2)
    model = make("concat", dropout=0.0)
    _, history = fit(
        model, _patients(40, 1), _patients(20, 2), knowledge(), dict(DIMS), spec, N_CLASSES, progress=False
    )
    assert [h["epoch"] for h in history] == [0, 1]


def test_compare_says_in_how_many_folds_a_correction_was_logreg_itself() -> None:
    from clinicmm.cli import early_lines

    lines = early_lines({"concat": 3, "omics": 2}, 5, "logreg", {"concat": 2})
    assert lines[0].endswith("in 3 of 5 folds (there it stays close to logreg; in 2 it is logreg)")
    assert lines[1].startswith("[yellow]omics: best epoch among the first two in 2 of 5 folds")
    assert early_lines({"concat": 3}, 5, "logreg")[0].endswith("(there it stays close to logreg)")
