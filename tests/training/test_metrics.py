"""classification_metrics and confusion: values checked against hand-computed confusions and AUROCs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from clinicmm.training.metrics import classification_metrics, confusion

CLASSES = ["A", "B", "C"]
# 6 samples, 3 classes. Confusion (rows = true, cols = predicted):
#   true A: [1, 1, 0]   true B: [0, 2, 0]   true C: [1, 0, 1]
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])
HAND_CM = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def one_hot(pred: np.ndarray, k: int, confidence: float = 0.8) -> np.ndarray:
    """Probabilities with ``confidence`` on ``pred`` and the rest spread evenly (argmax = pred)."""
    probs = np.full((len(pred), k), (1 - confidence) / (k - 1), dtype=np.float32)
    probs[np.arange(len(pred)), pred] = confidence
    return probs


def test_perfect_predictions_score_one_everywhere():
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    out = classification_metrics(y, one_hot(y, 3), CLASSES)
    expected_keys = {"accuracy", "macro_f1", "auroc_ovr"} | {
        f"{m}_{c}" for m in ("precision", "recall") for c in CLASSES
    }
    assert set(out) == expected_keys
    assert all(isinstance(v, float) for v in out.values())
    assert out == pytest.approx(dict.fromkeys(expected_keys, 1.0))


def test_hand_computed_confusion_gives_exact_metrics():
    out = classification_metrics(Y_TRUE, one_hot(Y_PRED, 3), CLASSES)
    # precision = diagonal / column sums, recall = diagonal / row sums
    precision = {"A": 1 / 2, "B": 2 / 3, "C": 1 / 1}
    recall = {"A": 1 / 2, "B": 2 / 2, "C": 1 / 2}
    f1 = {c: 2 * precision[c] * recall[c] / (precision[c] + recall[c]) for c in CLASSES}  # 0.5, 0.8, 2/3
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert out["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    for c in CLASSES:
        assert out[f"precision_{c}"] == pytest.approx(precision[c])
        assert out[f"recall_{c}"] == pytest.approx(recall[c])


def test_auroc_is_one_vs_rest_and_exact():
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.2, 0.6, 0.2], [0.1, 0.35, 0.55], [0.3, 0.5, 0.2], [0.05, 0.4, 0.55]]
    )
    # A: positives 0.7, 0.5 beat every negative (0.2, 0.1, 0.3, 0.05)              -> 8/8
    # B: positives 0.6, 0.35 vs negatives 0.2, 0.4, 0.5, 0.4: 4 + 1 pairs ordered   -> 5/8
    # C: positives 0.2, 0.55 vs negatives 0.1, 0.1, 0.2, 0.55: (2 + tie) + (3 + tie) -> 6/8 (a tie counts 1/2)
    out = classification_metrics(y, probs, CLASSES)
    assert out["auroc_ovr"] == pytest.approx((1.0 + 5 / 8 + 6 / 8) / 3)


def test_auroc_averages_only_classes_present_in_y_true():
    # class C never occurs in y_true. A: positives 0.7, 0.5 vs negatives 0.2, 0.4 -> 1.0
    # B: positives 0.6, 0.35 vs negatives 0.2, 0.4 -> 3 of 4 pairs -> 0.75
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.2, 0.6, 0.2], [0.4, 0.35, 0.25]])
    with warnings.catch_warnings():  # torchmetrics warns that class C has no positive sample
        warnings.simplefilter("ignore")
        out = classification_metrics(y, probs, CLASSES)
    assert out["auroc_ovr"] == pytest.approx((1.0 + 0.75) / 2)  # counting C as 0 would give 0.583


def test_auroc_undefined_with_a_single_present_class():
    y = np.array([1, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = classification_metrics(y, one_hot(np.array([1, 0, 1]), 3), CLASSES)
    assert math.isnan(out["auroc_ovr"])
    assert out["accuracy"] == pytest.approx(2 / 3)


def test_confusion_rows_are_true_columns_are_predicted():
    cm = confusion(Y_TRUE, Y_PRED, 3)
    assert isinstance(cm, np.ndarray)
    np.testing.assert_array_equal(cm, HAND_CM)
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(Y_TRUE, minlength=3))


def test_confusion_keeps_classes_absent_from_both():
    cm = confusion(np.array([0, 0, 1]), np.array([0, 1, 1]), 4)
    assert cm.shape == (4, 4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
