"""Temperature scaling, and the Calibration a bundle carries: fit, apply, prediction columns, test metrics, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clinicmm.config import CalibrationSpec
from clinicmm.training.calibration import (
    ABSTAIN,
    PREDICT,
    Calibration,
    expected_calibration_error,
    fit_temperature,
    temperature_scale,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(n: int, true_t: float, seed: int, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z / true_t) while the model reports softmax(z): over-confident by true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=(n, k))
    truth = _softmax(z / true_t)
    y = np.array([rng.choice(k, p=p) for p in truth])
    return _softmax(z), y


@pytest.mark.parametrize("true_t", [0.6, 2.5])
def test_fit_recovers_the_temperature_that_generated_the_labels(true_t):
    probs, y = _overconfident(4000, true_t, seed=0)
    assert fit_temperature(probs, y) == pytest.approx(true_t, rel=0.12)


def test_scaling_an_overconfident_model_lowers_its_ece_and_keeps_every_prediction():
    probs, y = _overconfident(3000, 2.5, seed=1)
    t = fit_temperature(probs[:1500], y[:1500])
    scaled = temperature_scale(probs[1500:], t)
    before, after = expected_calibration_error(probs[1500:], y[1500:]), expected_calibration_error(scaled, y[1500:])
    assert after < before / 2
    assert (scaled.argmax(1) == probs[1500:].argmax(1)).all()
    np.testing.assert_allclose(scaled.sum(1), 1.0)


def test_temperature_one_is_the_identity_and_larger_softens():
    probs, _ = _overconfident(50, 1.0, seed=2)
    np.testing.assert_allclose(temperature_scale(probs, 1.0), probs, atol=1e-9)
    assert (temperature_scale(probs, 3.0).max(1) < probs.max(1) + 1e-12).all()


def test_a_validation_split_without_errors_leaves_the_temperature_at_one():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    assert fit_temperature(probs, np.array([0, 1, 2])) == 1.0


def test_calibration_fit_records_val_ece_and_a_conformal_threshold():
    probs, y = _overconfident(600, 2.0, seed=3)
    cal = Calibration.fit(probs, y, CalibrationSpec(coverage=0.8, score="aps", abstain_below=0.5))
    assert cal.temperature > 1.2
    assert cal.validation["n"] == 600 and cal.validation["ece"] < cal.validation["ece_uncalibrated"]
    assert cal.conformal.score == "aps" and cal.conformal.coverage == 0.8 and cal.conformal.n_calibration == 600
    off = Calibration.fit(probs, y, CalibrationSpec(temperature=False, coverage=None))
    assert off.temperature == 1.0 and off.conformal is None


def test_test_metrics_count_coverage_set_size_and_abstention():
    probs, y = _overconfident(2000, 2.0, seed=4)
    cal = Calibration.fit(probs[:1000], y[:1000], CalibrationSpec(coverage=0.9, abstain_below=0.6))
    test = cal.apply(probs[1000:])
    m = cal.test_metrics(test, y[1000:])
    assert m["coverage_target"] == 0.9 and m["coverage"] >= 0.87
    assert 1.0 < m["mean_set_size"] < 4.0
    assert m["abstention_rate"] == pytest.approx((test.max(1) < 0.6).mean())
    overall = (test.argmax(1) == y[1000:]).mean()
    assert m["accuracy_non_abstained"] > overall  # abstaining on the unsure ones leaves the surer, righter ones


def test_columns_give_the_top3_differential_the_set_and_the_decision():
    classes = ["BRCA", "LUAD", "COAD", "PRAD"]
    probs = np.array([[0.1, 0.6, 0.2, 0.1], [0.3, 0.28, 0.27, 0.15]])
    cal = Calibration(abstain_below=0.5)
    rows = cal.columns(probs, classes)
    assert [rows[0][f"top{k}"] for k in (1, 2, 3)] == ["LUAD", "COAD", "BRCA"]
    assert [rows[0][f"top{k}_prob"] for k in (1, 2, 3)] == [0.6, 0.2, 0.1]
    assert rows[0]["decision"] == PREDICT and rows[1]["decision"] == ABSTAIN
    assert rows[0]["prediction_set"] == "" and np.isnan(rows[0]["set_size"])  # no conformal fitted: no set
    two = Calibration().columns(np.array([[0.3, 0.7]]), ["A", "B"])[0]
    assert (two["top1"], two["top2"], two["top3"]) == ("B", "A", "")


def test_columns_list_the_set_most_probable_first():
    probs, y = _overconfident(500, 3.0, seed=5)
    cal = Calibration.fit(probs, y, CalibrationSpec(coverage=0.9))
    classes = ["A", "B", "C", "D"]
    rows = cal.columns(cal.apply(probs), classes)
    sizes = [r["set_size"] for r in rows]
    assert max(sizes) > 1
    for r in rows:
        members = r["prediction_set"].split("+")
        assert len(members) == r["set_size"] and members[0] == r["top1"]


def test_round_trip_through_json_and_damaged_values_refused():
    probs, y = _overconfident(300, 2.0, seed=6)
    cal = Calibration.fit(probs, y, CalibrationSpec(abstain_below=0.4))
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    with pytest.raises(ValueError, match="temperature"):
        Calibration.from_dict({"temperature": -1})
    with pytest.raises(ValueError, match="abstain_below"):
        Calibration.from_dict({"temperature": 1.0, "abstain_below": 3})


def test_bundle_saves_and_loads_its_calibration(tmp_path):
    from clinicmm.config import EncodersSpec
    from clinicmm.errors import ModelError
    from clinicmm.knowledge.graph import KnowledgeGraph
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.data import Standardizer

    dims = {"image": 4, "note": 4, "omics": 4}
    scaler = Standardizer({m: [0.0] * 4 for m in dims}, {m: [1.0] * 4 for m in dims})
    probs, y = _overconfident(200, 2.0, seed=7, k=3)
    cal = Calibration.fit(probs, y, CalibrationSpec(coverage=0.85, abstain_below=0.5))
    bundle = ModelBundle(
        "concat",
        ["LUAD", "BRCA", "COAD"],
        dims,
        8,
        0.1,
        EncodersSpec(),
        {},
        scaler,
        {},
        KnowledgeGraph.default(),
        calibration=cal,
    )
    torch_state = bundle.build_model(load_weights=False).state_dict()
    bundle.state_dict = {k: v.detach().clone() for k, v in torch_state.items()}
    folder = bundle.save(tmp_path / "b")
    assert ModelBundle.load(folder).calibration == cal
    (folder / "calibration.json").unlink()  # a bundle from before calibration: the identity
    assert ModelBundle.load(folder).calibration == Calibration()
    (folder / "calibration.json").write_text('{"temperature": "hot"}')
    with pytest.raises(ModelError, match="calibration.json"):
        ModelBundle.load(folder)
