"""A model whose best validation loss comes in its first two epochs is named in a warning (it stopped learning)."""

import logging

from clinicmm.training.fit import best_epoch, warn_if_stopped_at_once


def _history(losses):
    return [{"epoch": i, "val_loss": v, "val_macro_f1": 0.5} for i, v in enumerate(losses)]


def test_the_best_epoch_is_the_lowest_finite_validation_loss():
    assert best_epoch(_history([0.9, 0.5, 0.7])) == 1
    assert best_epoch(_history([float("nan"), 0.8, 0.6])) == 2
    assert best_epoch(_history([float("nan")])) is None and best_epoch([]) is None


def test_a_model_that_stops_learning_at_once_is_named(caplog):
    with caplog.at_level(logging.WARNING, logger="clinicmm"):
        warn_if_stopped_at_once("kg_gnn", _history([0.5, 0.6, 0.9, 1.4, 2.2]))
    assert "kg_gnn: its best validation loss came at epoch 1 of 5" in caplog.text


def test_a_model_that_keeps_learning_or_ran_briefly_is_not(caplog):
    with caplog.at_level(logging.WARNING, logger="clinicmm"):
        warn_if_stopped_at_once("concat", _history([0.9, 0.7, 0.5, 0.4, 0.45]))
        warn_if_stopped_at_once("concat", _history([0.5, 0.6, 0.7]))  # too few epochs to tell
    assert caplog.text == ""


def test_a_correction_of_logreg_that_stops_at_once_is_said_at_info_not_warned(caplog):
    with caplog.at_level(logging.INFO, logger="clinicmm"):
        warn_if_stopped_at_once("concat", _history([0.5, 0.6, 0.9, 1.4, 2.2]), offset=True)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "concat: its correction of the logistic regression stopped improving at epoch 1 of 5" in caplog.text
