"""Split-conformal sets: the finite-sample quantile, coverage on exchangeable data, LAC vs APS, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clinicmm.training.conformal import (
    SplitConformal,
    class_scores,
    conformal_quantile,
    min_calibration_size,
    set_metrics,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _cohort(n: int, seed: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Patients whose label is drawn from the model's own (noisy) probabilities: a model that is calibrated
    but often unsure, so the sets must grow to reach the coverage."""
    rng = np.random.default_rng(seed)
    probs = _softmax(rng.normal(scale=1.5, size=(n, k)))
    y = np.array([rng.choice(k, p=p) for p in probs])
    return probs, y


def test_quantile_is_the_ceil_n_plus_one_coverage_th_smallest():
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6])  # n = 9
    assert conformal_quantile(scores, 0.8) == 0.8  # ceil(10 * 0.8) = 8th smallest
    assert conformal_quantile(scores, 0.5) == 0.5  # ceil(10 * 0.5) = 5th smallest
    assert conformal_quantile(scores, 0.9) == 0.9  # 9th of 9


def test_too_few_calibration_patients_give_an_infinite_threshold_and_full_sets():
    assert conformal_quantile(np.array([0.1, 0.2, 0.3]), 0.9) == math.inf  # ceil(4 * 0.9) = 4 > 3
    assert min_calibration_size(0.9) == 9 and min_calibration_size(0.8) == 4
    probs, y = _cohort(5, seed=1)
    fitted = SplitConformal.fit(probs, y, coverage=0.9)
    assert fitted.sets(probs).all()
    assert SplitConformal.from_dict(fitted.to_dict()).threshold == math.inf  # JSON null survives the round trip


@pytest.mark.parametrize("score", ["lac", "aps"])
@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_empirical_coverage_reaches_the_target_on_exchangeable_patients(score, coverage):
    covered = []
    for seed in range(8):
        probs, y = _cohort(600, seed)
        cal, test = slice(0, 300), slice(300, None)
        fitted = SplitConformal.fit(probs[cal], y[cal], coverage, score)
        covered.append(set_metrics(fitted.sets(probs[test]), y[test])["coverage"])
    # marginal guarantee: >= coverage in expectation, <= coverage + 1/(n+1) for continuous scores (LAC)
    assert np.mean(covered) >= coverage - 0.02
    if score == "lac":
        assert np.mean(covered) <= coverage + 0.03


def test_higher_coverage_never_gives_smaller_sets():
    probs, y = _cohort(400, seed=3)
    small = SplitConformal.fit(probs[:200], y[:200], 0.7).sets(probs[200:])
    large = SplitConformal.fit(probs[:200], y[:200], 0.95).sets(probs[200:])
    assert (large >= small).all() and large.sum() > small.sum()


def test_lac_sets_are_smaller_than_aps_sets_on_average():
    probs, y = _cohort(1000, seed=4)
    lac = SplitConformal.fit(probs[:500], y[:500], 0.9, "lac").sets(probs[500:])
    aps = SplitConformal.fit(probs[:500], y[:500], 0.9, "aps").sets(probs[500:])
    assert lac.sum(axis=1).mean() < aps.sum(axis=1).mean()


def test_sets_hold_the_most_probable_classes_and_are_never_empty():
    probs, y = _cohort(300, seed=5)
    fitted = SplitConformal.fit(probs[:150], y[:150], 0.5, "lac")
    member = fitted.sets(probs[150:])
    assert member.any(axis=1).all()
    order = np.argsort(-probs[150:], axis=1)
    ranked = np.take_along_axis(member, order, axis=1)  # membership in rank order: a run of True, then False
    assert (np.diff(ranked.astype(int), axis=1) <= 0).all()


def test_aps_score_is_the_mass_ranked_at_or_above_the_class():
    probs = np.array([[0.5, 0.3, 0.2], [0.25, 0.25, 0.5]])
    np.testing.assert_allclose(class_scores(probs, "aps"), [[0.5, 0.8, 1.0], [1.0, 1.0, 0.5]])
    np.testing.assert_allclose(class_scores(probs, "lac"), 1 - probs)


def test_a_confident_model_gets_singletons_an_unsure_one_gets_a_differential():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 4, 200)
    sure = np.full((200, 4), 0.02)
    sure[np.arange(200), y] = 0.94
    unsure = _softmax(rng.normal(scale=0.2, size=(200, 4)))
    assert set_metrics(SplitConformal.fit(sure[:100], y[:100]).sets(sure[100:]), y[100:])["mean_set_size"] == 1.0
    assert set_metrics(SplitConformal.fit(unsure[:100], y[:100]).sets(unsure[100:]), y[100:])["mean_set_size"] >= 3


def test_bad_inputs_are_value_errors_quoting_them():
    probs, y = _cohort(20, seed=7)
    with pytest.raises(ValueError, match="coverage"):
        SplitConformal.fit(probs, y, coverage=1.0)
    with pytest.raises(ValueError, match="class indices"):
        SplitConformal.fit(probs, y + 10)
    with pytest.raises(ValueError, match="score"):
        class_scores(probs, "raps")
