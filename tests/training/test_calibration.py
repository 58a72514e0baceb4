"""Top-label ECE and reliability bins: zero for calibrated data, hand-computed values, bin edges, validation."""

from __future__ import annotations

import numpy as np
import pytest

from clinicmm.training.calibration import expected_calibration_error, reliability_bins


def _two_class(conf: float, n: int, n_correct: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` predictions of class 0 with confidence ``conf``, ``n_correct`` of them right."""
    probs = np.tile([conf, 1 - conf], (n, 1))
    y = np.array([0] * n_correct + [1] * (n - n_correct))
    return probs, y


def test_ece_is_zero_when_accuracy_matches_confidence_in_every_bin():
    parts = [_two_class(0.7, 10, 7), _two_class(0.6, 5, 3), _two_class(0.75, 4, 3), _two_class(0.9, 10, 9)]
    probs, y = np.vstack([p for p, _ in parts]), np.concatenate([t for _, t in parts])
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)


def test_ece_matches_hand_computed_value():
    # n_bins=5, edges 0 .2 .4 .6 .8 1; confidences .9 (right), .8 (wrong), .6 (right), .55 (wrong)
    # bin (.8,1]: |1 - .9| * 1; bin (.6,.8]: |0 - .8| * 1; bin (.4,.6]: |.5 - .575| * 2  -> (0.1 + 0.8 + 0.15) / 4
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, y, n_bins=5) == pytest.approx(1.05 / 4)


def test_ece_is_one_when_always_sure_and_always_wrong():
    probs, y = _two_class(1.0, 6, 0)
    assert expected_calibration_error(probs, y) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_lies_in_unit_interval_for_random_predictions(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(4, 0.3), size=200)
    y = rng.integers(0, 4, 200)
    ece = expected_calibration_error(probs, y, n_bins=15)
    assert 0.0 < ece <= 1.0


def test_reliability_bins_keep_empty_bins_and_counts_sum_to_n():
    probs = np.array([[0.92, 0.08], [0.95, 0.05], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5]])
    y = np.array([0, 1, 0, 1, 1])
    bins = reliability_bins(probs, y, n_bins=10)
    assert list(bins.columns) == ["bin_lower", "bin_upper", "count", "confidence", "accuracy"]
    assert len(bins) == 10 and bins["count"].sum() == len(y)
    assert np.allclose(bins["bin_lower"], np.arange(10) / 10) and np.allclose(bins["bin_upper"], np.arange(1, 11) / 10)
    assert bins["count"].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 2]
    empty = bins[bins["count"] == 0]
    assert empty["confidence"].isna().all() and empty["accuracy"].isna().all()
    top = bins.iloc[9]
    assert top["confidence"] == pytest.approx(0.935) and top["accuracy"] == pytest.approx(0.5)
    # 0.5 is the upper edge of (0.4, 0.5]; argmax of a tie is class 0, which is wrong here
    assert bins.iloc[4]["confidence"] == pytest.approx(0.5) and bins.iloc[4]["accuracy"] == 0.0


def test_bin_upper_edges_are_inclusive_despite_float_rounding():
    probs = np.array([[0.3, 0.25, 0.25, 0.2], [0.6, 0.2, 0.1, 0.1]])
    bins = reliability_bins(probs, np.array([0, 0]), n_bins=10)
    assert bins.loc[2, "count"] == 1 and bins.loc[5, "count"] == 1  # (0.2, 0.3] and (0.5, 0.6]


@pytest.mark.parametrize(
    "probs, y, n_bins, fragment",
    [
        (np.array([0.2, 0.8]), np.array([1]), 10, "Expected probs of shape (N, C)"),
        (np.array([[0.2, 0.8]]), np.array([1, 0]), 10, "Expected y of shape (1,)"),
        (np.array([[0.2, 0.8]]), np.array([2]), 10, "Expected integer class indices in [0, 2)"),
        (np.array([[0.2, 0.8]]), np.array([1.0]), 10, "Expected integer class indices"),
        (np.array([[2.0, -1.0]]), np.array([0]), 10, "Expected probabilities in [0, 1]"),
        (np.array([[np.nan, 1.0]]), np.array([0]), 10, "Expected probabilities in [0, 1]"),
        (np.array([[0.2, 0.8]]), np.array([1]), 0, "Expected n_bins to be an integer >= 1"),
    ],
)
def test_bad_inputs_raise_value_error_that_says_what_was_expected(probs, y, n_bins, fragment):
    with pytest.raises(ValueError, match=r"\(got") as err:
        expected_calibration_error(probs, y, n_bins)
    assert fragment in str(err.value)
