"""Temperature scaling is kept only when it lowers the held-out (cross-fitted) NLL (issue 15: it made test ECE
worse). An already calibrated model keeps T = 1, an over-confident one gets T > 1 and a lower NLL, tiny splits are
not fitted, and the record carries NLL and ECE before and after as plain numbers."""

from __future__ import annotations

import logging
import numbers

import numpy as np
import pytest

from clinicmm.config import CalibrationSpec
from clinicmm.training.calibration import (
    MIN_TEMPERATURE_N,
    Calibration,
    calibration_share,
    choose_temperature,
    fit_calibration,
    fit_temperature,
    nll,
    temperature_scale,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _model(n: int, true_t: float, seed: int, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The model reports softmax(z); labels come from softmax(z / true_t): calibrated when true_t == 1,
    over-confident when true_t > 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(n, k))
    y = np.array([rng.choice(k, p=p) for p in _softmax(z / true_t)])
    return _softmax(z), y


@pytest.mark.parametrize("n", [100, 1000])
@pytest.mark.parametrize("seed", range(4))
def test_an_already_calibrated_model_keeps_temperature_one(n: int, seed: int) -> None:
    probs, y = _model(n, 1.0, seed)
    temperature, record = choose_temperature(probs, y)
    assert fit_temperature(probs, y) != 1.0  # the plain fit would have moved it (noise)...
    assert temperature == 1.0 and record["temperature_refused"] == 1.0  # ...the cross-fit check refuses it
    assert record["temperature_fitted"] == pytest.approx(fit_temperature(probs, y))
    assert record["nll"] == record["nll_uncalibrated"] and record["ece"] == record["ece_uncalibrated"]
    cal = Calibration.fit(probs, y, CalibrationSpec(coverage=None))
    np.testing.assert_array_equal(cal.apply(probs), probs)


@pytest.mark.parametrize("true_t", [1.5, 2.5])
def test_an_overconfident_model_gets_a_temperature_above_one_and_a_lower_nll(true_t: float) -> None:
    probs, y = _model(300, true_t, seed=7)
    cal = Calibration.fit(probs, y, CalibrationSpec(coverage=None))
    v = cal.validation
    assert cal.temperature > 1.2 and v["temperature_refused"] == 0.0 and cal.temperature == v["temperature_fitted"]
    assert v["nll"] < v["nll_uncalibrated"] and v["nll_crossfit"] < v["nll_uncalibrated"] - v["nll_gain_se"]
    assert v["ece"] < v["ece_uncalibrated"] and v["ece_crossfit"] < v["ece_uncalibrated"]
    assert v["nll"] == pytest.approx(nll(temperature_scale(probs, cal.temperature), y))
    assert v["n"] == 300 and v["folds"] == 5
    assert all(isinstance(x, numbers.Real) and np.isfinite(x) for x in v.values())  # logged as MLflow metrics


def test_on_fresh_patients_the_chosen_temperature_does_not_hurt_where_always_fitting_does() -> None:
    chosen, always = [], []
    for seed in range(20):
        probs, y = _model(50, 1.0, seed)  # small validation splits of a calibrated model
        test_probs, test_y = _model(1000, 1.0, 1000 + seed)
        base = nll(test_probs, test_y)
        chosen.append(nll(Calibration.fit(probs, y, CalibrationSpec(coverage=None)).apply(test_probs), test_y) - base)
        always.append(nll(temperature_scale(test_probs, fit_temperature(probs, y)), test_y) - base)
    assert np.mean(always) > 0.003  # fitting T on every small split makes fresh predictions worse on average
    assert np.mean(chosen) <= 1e-3 and np.mean(chosen) < np.mean(always) / 3


def test_too_few_validation_patients_fit_no_temperature_and_say_so(caplog) -> None:
    probs, y = _model(MIN_TEMPERATURE_N - 1, 2.5, seed=3)
    with caplog.at_level(logging.WARNING, logger="clinicmm"):
        cal = fit_calibration("concat", probs, y, CalibrationSpec(coverage=None))
    assert cal.temperature == 1.0
    assert cal.validation["temperature_refused"] == 1.0 and cal.validation["folds"] == 0
    assert f"temperature scaling needs {MIN_TEMPERATURE_N}" in caplog.text and "split.val" in caplog.text


def test_the_log_line_gives_both_nlls_and_eces_and_the_decision(caplog) -> None:
    probs, y = _model(200, 2.0, seed=4)
    with caplog.at_level(logging.INFO, logger="clinicmm"):
        cal = fit_calibration("concat", probs, y, CalibrationSpec(coverage=None))
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("calibration concat")]
    v = cal.validation
    assert f"NLL {v['nll_uncalibrated']:.4f} -> {v['nll']:.4f}" in line and "kept" in line
    assert f"ECE {v['ece_uncalibrated']:.4f} -> {v['ece']:.4f}" in line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="clinicmm"):
        fit_calibration("concat", *_model(200, 1.0, seed=1), CalibrationSpec(coverage=None))
    assert "refused" in caplog.text


def test_without_temperature_scaling_the_record_still_has_nll_and_ece() -> None:
    probs, y = _model(100, 2.0, seed=5)
    v = Calibration.fit(probs, y, CalibrationSpec(temperature=False, coverage=None)).validation
    assert v["nll"] == v["nll_uncalibrated"] == pytest.approx(nll(probs, y)) and v["ece"] == v["ece_uncalibrated"]


def test_calibration_share_is_stratified_disjoint_and_complete() -> None:
    y = np.array([0] * 10 + [1] * 6 + [2] * 1)
    stop, calib = calibration_share(y, 0.5)
    assert sorted(np.concatenate([stop, calib]).tolist()) == list(range(len(y)))
    assert np.bincount(y[calib], minlength=3).tolist() == [5, 3, 0]  # a lone class stays with early stopping
    again = calibration_share(y, 0.5)
    assert np.array_equal(again[1], calib)
    with pytest.raises(ValueError, match="calibration share in \\(0, 1\\)"):
        calibration_share(y, 1.0)
