"""The logistic-regression model: fitted in closed form (C by inner CV on the training rows), it predicts exactly
what scikit-learn's fitted model predicts, and serves through the same torch path as every fusion model."""

from __future__ import annotations

import numpy as np
import pytest

from clinicmm.config import TrainingSpec
from clinicmm.fusion.batch import PatientEvidence
from clinicmm.fusion.registry import build_model
from clinicmm.training.fit import predict_proba
from clinicmm.training.linear import design, fit_linear

DIMS = {"image": 3, "note": 4, "omics": 2}
SPEC = TrainingSpec(seed=0)
pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


def _patients(n: int, k: int, seed: int = 0, noise: float = 0.5) -> list[PatientEvidence]:
    """Notes carry the class (k classes), images are noise and missing for every third patient, no omics."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % k
        note = (np.eye(4)[y % 4] * 2 + rng.normal(0, noise, 4)).astype(np.float32)
        image = None if i % 3 == 0 else rng.normal(0, 1, 3).astype(np.float32)
        out.append(PatientEvidence(label=y, image=image, note=note, omics=None))
    return out


@pytest.fixture(scope="module")
def kg():
    from clinicmm.keys import Node
    from clinicmm.knowledge.graph import KnowledgeGraph

    graph = KnowledgeGraph.default()
    graph.ensure_nodes(Node.CANCER, ["A", "B", "C"])
    return graph.to_hetero()


def _model(n_classes: int, kg):
    import torch

    return build_model("logreg", DIMS, n_classes, kg, torch.zeros(n_classes, dtype=torch.long))


def test_the_fitted_model_predicts_what_scikit_learn_predicts(kg):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    train, test = _patients(60, 3), _patients(30, 3, seed=1)
    model = _model(3, kg)
    history = fit_linear(model, train, test, kg, DIMS, SPEC, 3)
    x, y = design(model, train, kg, DIMS)
    assert x.shape == (60, sum(DIMS.values()) + 3)  # embeddings + presence mask
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    reference = LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), cv=cv, scoring="neg_log_loss", max_iter=5000, tol=1e-9)
    reference.fit(x, y)  # solved to the optimum
    probs = predict_proba(model, test, kg, DIMS)
    np.testing.assert_allclose(probs, reference.predict_proba(design(model, test, kg, DIMS)[0]), atol=2e-3)
    assert history[0]["C"] == pytest.approx(float(reference.C_[0]))
    assert history[0]["val_macro_f1"] > 0.9 and np.isfinite(history[0]["val_loss"])


def test_features_without_signal_get_a_stronger_penalty(kg):
    import dataclasses

    clean = _patients(60, 3, noise=0.1)
    labels = np.random.default_rng(5).permutation([p.label for p in clean])  # labels unrelated to the features
    shuffled = [dataclasses.replace(p, label=int(y)) for p, y in zip(clean, labels)]
    c_clean = fit_linear(_model(3, kg), clean, [], kg, DIMS, SPEC, 3)[0]["C"]
    c_shuffled = fit_linear(_model(3, kg), shuffled, [], kg, DIMS, SPEC, 3)[0]["C"]
    assert c_shuffled < c_clean


def test_two_classes_give_softmax_probabilities_of_the_logistic_fit(kg):
    from sklearn.linear_model import LogisticRegressionCV

    train = _patients(40, 2)
    model = _model(2, kg)
    fit_linear(model, train, [], kg, DIMS, SPEC, 2)
    x, y = design(model, train, kg, DIMS)
    probs = predict_proba(model, train, kg, DIMS)
    assert probs.shape == (40, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    ref = LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), cv=5, scoring="neg_log_loss", max_iter=5000).fit(x, y)
    assert (probs.argmax(1) == ref.predict(x)).mean() == 1.0


def test_a_class_without_training_rows_is_never_predicted(kg):
    train = [p for p in _patients(60, 3) if p.label != 2]  # class 2 only in the validation split
    model = _model(3, kg)
    fit_linear(model, train, _patients(9, 3, seed=2), kg, DIMS, SPEC, 3)
    probs = predict_proba(model, _patients(30, 3, seed=3), kg, DIMS)
    assert probs[:, 2].max() < 1e-6 and (probs.argmax(1) != 2).all()


def test_more_features_than_patients_fits_the_same_model_in_the_rows_space(kg):
    """Thousands of omics features, a few dozen patients: fitted on the SVD of the rows (exact for an L2 penalty),
    the model predicts what scikit-learn fitted on the raw features predicts, with the same chosen C."""
    import torch
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    from clinicmm.training.linear import row_space

    dims = {"image": 3, "note": 4, "omics": 300}
    rng = np.random.default_rng(7)

    def patients(n: int, seed: int) -> list[PatientEvidence]:
        r = np.random.default_rng(seed)
        out = []
        for i in range(n):
            omics = r.normal(0, 1, 300).astype(np.float32)
            omics[: 3 * 10] += np.repeat(np.eye(3)[i % 3], 10).astype(np.float32) * 0.8  # ten genes per class
            out.append(PatientEvidence(label=i % 3, note=r.normal(0, 1, 4).astype(np.float32), omics=omics))
        return out

    train, test = patients(45, 0), patients(30, 1)
    model = build_model("logreg", dims, 3, kg, torch.zeros(3, dtype=torch.long))
    history = fit_linear(model, train, [], kg, dims, SPEC, 3)
    x, y = design(model, train, kg, dims)
    z, basis = row_space(x)
    assert x.shape[1] > x.shape[0] and z.shape[1] <= x.shape[0] and np.allclose(z @ basis, x)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    reference = LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), cv=cv, scoring="neg_log_loss", max_iter=5000, tol=1e-9)
    reference.fit(x, y)  # solved to the optimum on the raw features
    assert history[0]["C"] == pytest.approx(float(reference.C_[0]))
    x_test = design(model, test, kg, dims)[0]
    np.testing.assert_allclose(predict_proba(model, test, kg, dims), reference.predict_proba(x_test), atol=2e-3)
    assert row_space(rng.normal(size=(50, 20)))[1] is None  # more patients than features: fitted as they are


def test_a_design_of_low_rank_is_fitted_in_its_rank_with_the_same_predictions() -> None:
    """A few values per patient spread over many features (arm-level copy number pooled over gene sets), computed in
    float32: the rank is the values', not the rows' or the columns' (rounding gives every other direction a
    singular value of ~1e-7 of the largest, which the fit must not count). Fitted in that rank, the model predicts
    what scikit-learn fitted on the raw features predicts, with the same C; more patients than features too."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    from clinicmm.training.linear import classifier, row_space

    rng = np.random.default_rng(3)
    for n, columns in ((120, 400), (300, 150)):
        y = np.arange(n) % 3
        values = rng.normal(size=(n, 6)) + np.eye(3)[y].repeat(2, axis=1)
        spread = rng.normal(size=(6, columns))
        x = (values.astype(np.float32) @ spread.astype(np.float32)).astype(np.float64)
        z, basis = row_space(x)
        assert z.shape == (n, 6) and basis.shape == (6, columns)
        np.testing.assert_allclose(z @ basis, x, atol=1e-4 * np.abs(x).max())
        ours = classifier(y, 3, seed=0).fit(z, y)
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        reference = LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), cv=cv, scoring="neg_log_loss", max_iter=20000)
        reference.fit(x, y)
        assert float(np.atleast_1d(ours.C_)[0]) == pytest.approx(float(np.atleast_1d(reference.C_)[0]))
        np.testing.assert_allclose(ours.predict_proba(z), reference.predict_proba(x), atol=2e-3)
    full = rng.normal(size=(50, 20)).astype(np.float32).astype(np.float64)
    assert row_space(full)[1] is None  # full column rank: fitted as it is


def test_balanced_class_weights_reach_the_linear_fit(kg):
    """``training.class_weights: balanced`` weights logreg's patients n / (k x count), as scikit-learn's 'balanced'
    does: the rare class gets more probability than unweighted, and the fit is scikit-learn's weighted one."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    common = [p for p in _patients(120, 3, noise=2.0) if p.label != 2]
    train = common + [p for p in _patients(60, 3, seed=3, noise=2.0) if p.label == 2][:8]  # class 2: 8 of 88
    test = _patients(30, 3, seed=5, noise=2.0)
    balanced, plain = _model(3, kg), _model(3, kg)
    fit_linear(balanced, train, [], kg, DIMS, SPEC.model_copy(update={"class_weights": "balanced"}), 3)
    fit_linear(plain, train, [], kg, DIMS, SPEC, 3)
    rare_balanced = predict_proba(balanced, test, kg, DIMS)[:, 2].mean()
    assert rare_balanced > predict_proba(plain, test, kg, DIMS)[:, 2].mean() + 0.02
    x, y = design(balanced, train, kg, DIMS)
    reference = LogisticRegressionCV(
        Cs=np.logspace(-4, 2, 13), cv=StratifiedKFold(5, shuffle=True, random_state=0), scoring="neg_log_loss",
        max_iter=5000, tol=1e-9, class_weight="balanced",
    ).fit(x, y)  # fmt: skip
    expected = reference.predict_proba(design(balanced, test, kg, DIMS)[0])
    np.testing.assert_allclose(predict_proba(balanced, test, kg, DIMS), expected, atol=2e-3)


WIDE = {"image": 3, "note": 4, "omics": 300}


def _noisy_omics(n: int, seed: int) -> list[PatientEvidence]:
    """The note carries the class (3 classes) under noise; 300 omics columns are pure noise: a large uninformative
    layer beside a small informative one."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        note = (np.eye(4)[i % 3] * 1.2 + rng.normal(0, 1.0, 4)).astype(np.float32)
        omics = rng.normal(0, 1, WIDE["omics"]).astype(np.float32)
        out.append(PatientEvidence(label=i % 3, image=None, note=note, omics=omics))
    return out


def test_equal_blocks_weigh_each_modality_alike_so_a_large_noisy_layer_does_not_drown_a_small_informative_one(kg):
    """``training.linear_blocks: equal``: the fitted scale gives the note and the omics block the same total variance
    on the training rows (their sum as before; the image, absent, and the presence flags keep 1), the fit is
    scikit-learn's on the scaled design, and on held-out patients it beats the unscaled fit, which spreads its
    weight over 300 noise columns."""
    import torch
    from sklearn.metrics import f1_score

    from clinicmm.training.data import input_blocks

    train, test = _noisy_omics(45, 0), _noisy_omics(300, 1)
    fitted = {}
    for blocks in ("none", "equal"):
        model = build_model("logreg", WIDE, 3, kg, torch.zeros(3, dtype=torch.long))
        model.blocks = input_blocks(WIDE, None)
        fit_linear(model, train, [], kg, WIDE, SPEC.model_copy(update={"linear_blocks": blocks}), 3)
        fitted[blocks] = model
    assert fitted["none"].scale.numel() == 0
    x, y = design(fitted["equal"], train, kg, WIDE)
    scale = fitted["equal"].scale.double().numpy()
    variance = (x * scale).var(axis=0)
    note, omics = slice(3, 7), slice(7, 307)
    assert variance[note].sum() == pytest.approx(variance[omics].sum(), rel=1e-6)
    assert variance[note].sum() + variance[omics].sum() == pytest.approx(x.var(axis=0)[3:307].sum(), rel=1e-6)
    assert (scale[:3] == 1).all() and (scale[-3:] == 1).all()
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    reference = LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                     scoring="neg_log_loss", max_iter=5000, tol=1e-9).fit(x * scale, y)  # fmt: skip
    x_test, y_test = design(fitted["equal"], test, kg, WIDE)
    probs = predict_proba(fitted["equal"], test, kg, WIDE)
    np.testing.assert_allclose(probs, reference.predict_proba(x_test * scale), atol=2e-3)
    f1 = {b: f1_score(y_test, predict_proba(m, test, kg, WIDE).argmax(1), average="macro") for b, m in fitted.items()}
    assert f1["equal"] > f1["none"] + 0.1


def test_a_fitted_block_scale_travels_in_the_weights_and_a_model_saved_before_it_loads_unscaled(kg):
    import torch

    from clinicmm.training.data import input_blocks

    train = _noisy_omics(45, 0)
    model = build_model("logreg", WIDE, 3, kg, torch.zeros(3, dtype=torch.long))
    model.blocks = input_blocks(WIDE, None)
    fit_linear(model, train, [], kg, WIDE, SPEC.model_copy(update={"linear_blocks": "equal"}), 3)
    fresh = build_model("logreg", WIDE, 3, kg, torch.zeros(3, dtype=torch.long))
    fresh.load_state_dict(model.state_dict())  # strict: the scale is a weight like the others
    np.testing.assert_array_equal(predict_proba(fresh, train, kg, WIDE), predict_proba(model, train, kg, WIDE))
    older = {k: v for k, v in model.state_dict().items() if k != "scale"}  # a bundle saved before block scales
    fresh.load_state_dict(older)
    assert fresh.scale.numel() == 0
    x, _ = design(fresh, train, kg, WIDE)
    with torch.no_grad():
        expected = torch.softmax(model.linear(torch.as_tensor(x, dtype=torch.float32)), 1).numpy()
    np.testing.assert_allclose(predict_proba(fresh, train, kg, WIDE), expected, atol=1e-6)
