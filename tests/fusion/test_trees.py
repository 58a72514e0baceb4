"""The boosted-trees model: its torch node tables predict exactly what scikit-learn's fitted trees predict, it
saves and loads like any model, and the fit path chooses the rounds on the training rows alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinicmm.config import TrainingSpec
from clinicmm.fusion.registry import CLOSED_FORM, build_model
from clinicmm.training.fit import predict_proba
from clinicmm.training.linear import design
from clinicmm.training.trees import copy_into, fit_trees

DIMS = {"image": 3, "note": 4, "omics": 2}
WIDTH = sum(DIMS.values()) + 3
pytestmark = pytest.mark.usefixtures("one_thread", "quiet_warnings")


@pytest.fixture(scope="module")
def kg():
    from clinicmm.keys import Node
    from clinicmm.knowledge.graph import KnowledgeGraph

    graph = KnowledgeGraph.default()
    graph.ensure_nodes(Node.CANCER, ["A", "B", "C", "D"])
    return graph.to_hetero()


def _model(n_classes: int, kg):
    return build_model("gbt", DIMS, n_classes, kg, torch.zeros(n_classes, dtype=torch.long))


def _data(n: int, classes: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.asarray([classes[i % len(classes)] for i in range(n)])
    x = rng.normal(0, 1, (n, WIDTH))
    x[:, 0] += 1.5 * y  # a signal the trees find, plus noise columns
    x[:, 5] -= y * (x[:, 2] > 0)  # and an interaction a linear model cannot express
    return x, y


@pytest.mark.parametrize("classes", [[0, 1, 2], [0, 2], [1, 2, 3]], ids=["three", "binary-of-three", "one-absent"])
def test_the_torch_trees_give_scikit_learns_decision_function(kg, classes):
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _data(90, classes, seed=0)
    clf = GradientBoostingClassifier(n_estimators=40, max_depth=3, init="zero", subsample=0.8, random_state=0)
    clf.fit(x, y)
    model = _model(4, kg)
    copy_into(model, clf, 4)
    test = _data(50, classes, seed=1)[0]
    logits = model.logits(torch.as_tensor(test)).double().numpy()
    reference = clf.decision_function(test)
    if reference.ndim == 1:  # binary: the log-odds of the second class
        np.testing.assert_allclose(logits[:, classes[1]] - logits[:, classes[0]], reference, atol=1e-5)
    else:
        np.testing.assert_allclose(logits[:, classes], reference, atol=1e-5)
    absent = [c for c in range(4) if c not in classes]
    assert (logits[:, absent] < -20).all()  # a class no training patient had is never predicted
    np.testing.assert_array_equal(np.argmax(logits, 1), clf.predict(test))


def test_saved_trees_load_into_a_fresh_model(kg):
    x, y = _data(60, [0, 1, 2], seed=2)
    from sklearn.ensemble import GradientBoostingClassifier

    model = _model(4, kg)
    copy_into(model, GradientBoostingClassifier(n_estimators=10, init="zero", random_state=0).fit(x, y), 4)
    from safetensors.torch import load, save

    state = load(save({k: v.contiguous() for k, v in model.state_dict().items()}))  # as the bundle stores it
    fresh = _model(4, kg)
    assert fresh.feature.shape[0] == 0  # an unfitted model holds no trees
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    test = torch.as_tensor(_data(20, [0, 1, 2], seed=3)[0])
    torch.testing.assert_close(fresh.logits(test), model.logits(test))


def test_fit_trees_learns_an_interaction_and_reports_its_rounds(kg):
    from clinicmm.fusion.batch import PatientEvidence

    rng = np.random.default_rng(0)

    def patients(n: int) -> list[PatientEvidence]:
        out = []
        for i in range(n):
            note = rng.normal(0, 1, 4).astype(np.float32)
            y = int((note[0] > 0) != (note[1] > 0))  # XOR: no linear model separates it
            out.append(PatientEvidence(label=y, image=None, note=note, omics=rng.normal(0, 1, 2).astype(np.float32)))
        return out

    train, val = patients(300), patients(100)
    model = _model(2, kg)
    history = fit_trees(model, train, val, kg, DIMS, TrainingSpec(seed=0), 2)
    assert "gbt" in CLOSED_FORM and len(history) == 1
    assert 0 < history[0]["trees"] <= 500  # early stopping on the inner share chose the rounds
    assert history[0]["val_macro_f1"] > 0.8
    probs = predict_proba(model, val, kg, DIMS)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert design(model, val, kg, DIMS)[0].shape == (100, WIDTH)


def test_too_few_rows_for_an_inner_share_of_every_class_fit_without_early_stopping(kg):
    from clinicmm.fusion.batch import PatientEvidence

    rng = np.random.default_rng(1)
    train = [
        PatientEvidence(label=i % 4, image=None, note=(np.eye(4)[i % 4] + rng.normal(0, 0.1, 4)).astype(np.float32))
        for i in range(24)  # fit on 20 rows of 4 classes: a 15% share is 3 rows, fewer than the classes
    ]
    history = fit_trees(_model(4, kg), train[:20], train[20:], kg, DIMS, TrainingSpec(seed=0), 4)
    assert history[0]["trees"] == 100 and history[0]["val_macro_f1"] == 1.0


def test_balanced_class_weights_reach_the_trees(kg):
    """``training.class_weights: balanced``: the boosted trees weight each class's patients n / (k x count), so a
    rare class gets more probability than unweighted."""
    from clinicmm.fusion.batch import PatientEvidence

    def patients(n: int, seed: int, rare_every: int) -> list[PatientEvidence]:
        x, _ = _data(n, [0], seed)
        y = [2 if i % rare_every == 0 else i % 2 for i in range(n)]
        return [
            PatientEvidence(label=int(c), image=None, note=(row[:4] + 0.8 * c).astype(np.float32), omics=None)
            for row, c in zip(x, y)
        ]

    train, test = patients(200, 0, rare_every=12), patients(60, 1, rare_every=3)
    weighted, plain = _model(3, kg), _model(3, kg)
    fit_trees(weighted, train, [], kg, DIMS, TrainingSpec(seed=0, class_weights="balanced"), 3)
    fit_trees(plain, train, [], kg, DIMS, TrainingSpec(seed=0), 3)
    rare = predict_proba(weighted, test, kg, DIMS)[:, 2].mean()
    assert rare > predict_proba(plain, test, kg, DIMS)[:, 2].mean() + 0.05
