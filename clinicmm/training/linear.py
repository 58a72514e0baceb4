"""Closed-form fit of the linear model (:class:`clinicmm.fusion.models.linear.LinearFusion`).

scikit-learn's ``LogisticRegressionCV`` (multinomial, L2) chooses the penalty ``C`` by stratified inner
cross-validation on the training rows only (log loss), then refits on all of them; the coefficients are copied
into the torch module, which then predicts, calibrates, explains and serves like every other model. The
validation rows are scored once for the history row the train stage and the champion choice read.

With more features than patients (omics: thousands of features, a few hundred patients) the fit runs in the rows'
own space: with ``X = U S Vt`` (thin SVD) an L2-penalised solution lies in the row space of ``X``, ``w = Vt' b``,
with ``|w| = |b|`` and ``X w = (U S) b``, so fitting ``b`` on the ``n`` columns of ``U S`` with the same ``C`` is
the same problem (the representer theorem; the intercept is not penalised either way). It holds for the inner
cross-validation too, since every inner row is a row of ``X``. Same optimum, a fraction of the time: on a
TCGA-KIPAN fold (130 patients) kg_logreg's 4,966 features took 26 s, ``U S``'s 130 well under 1 s.
"""

from __future__ import annotations

import numpy as np
import torch

from clinicmm.config import TrainingSpec

CS = np.logspace(-4, 2, 13)  # the penalties tried (C = 1 / lambda)
ABSENT_BIAS = -30.0  # a class with no training row: never predicted
# the solver's stopping tolerance (scikit-learn's 1e-4 leaves probabilities ~0.01 off the optimum at large C)
TOL = 1e-6
# the precision the model computes its features in (float32): the rank of the design matrix is judged against it
FEATURE_EPS = float(np.finfo(np.float32).eps)


def design(model, items: list, knowledge, dims) -> tuple[np.ndarray, np.ndarray]:
    """The model's input features and labels of ``items`` (PatientEvidence), exactly as its forward sees them."""
    from clinicmm.training.loaders import make_loader

    if not items:
        return np.zeros((0, model.in_features)), np.zeros(0, dtype=int)
    batch = next(iter(make_loader(items, knowledge, dict(dims), len(items))))
    return model.features(batch).double().numpy(), batch["patient"].y.numpy()


def fit_linear(model, train: list, val: list, knowledge, dims, spec: TrainingSpec, n_classes: int) -> list[dict]:
    """Fit ``model`` on ``train``; its history: one row with train / val log loss, val macro-F1 and the chosen C."""
    x, y = design(model, train, knowledge, dims)
    clf = classifier(y, n_classes, spec.seed, balanced=spec.class_weights == "balanced")
    scale = block_scale(x, getattr(model, "blocks", None)) if spec.linear_blocks == "equal" else None
    # model.logits applies it from now on (none: an empty scale, also on a refit); design() stays the unscaled view
    model.scale = torch.as_tensor(scale if scale is not None else np.ones(0), dtype=model.linear.weight.dtype)
    z, basis = row_space(x * scale if scale is not None else x)
    clf.fit(z, y)
    if basis is not None:  # the coefficients of the original features
        clf.coef_ = clf.coef_ @ basis
    _copy_into(model, clf, n_classes)
    chosen = clf.C_ if hasattr(clf, "C_") else [clf.C]
    row = {"epoch": 1, "C": float(np.atleast_1d(chosen)[0])}
    row |= scores(model, x, y, "train") | scores(model, *design(model, val, knowledge, dims), "val")
    return [row]


def block_scale(x: np.ndarray, blocks: list | None) -> np.ndarray | None:
    """Per column of ``x`` (training rows), ``sqrt(mean block variance / its block's variance)``: every block
    (modality, omics table; ``blocks`` names each column's, None for the presence flags, which keep 1) then has the
    same total variance, and the total is what it was: multi-block weighting as Multiple Factor Analysis does it
    (Abdi et al. 2013), by each block's total variance rather than MFA's first singular value (alike on the real
    cohorts, better beside a redundant layer: ``benchmarks/linear_blocks.py``, README). Under one L2 penalty a layer
    of 800 redundant copy-number bands would otherwise outweigh 8 informative genes 100 to 1. None (no scaling) with
    fewer than two blocks that vary or without block names."""
    if blocks is None or len(blocks) != x.shape[1]:
        return None
    labels = np.array([b if b is not None else "" for b in blocks], dtype=object)
    variance = x.var(axis=0)
    totals = {b: float(variance[labels == b].sum()) for b in dict.fromkeys(labels) if b}
    active = {b: t for b, t in totals.items() if t > FEATURE_EPS}
    if len(active) < 2:
        return None
    scale = np.ones(x.shape[1])
    target = float(np.mean(list(active.values())))
    for b, t in active.items():
        scale[labels == b] = np.sqrt(target / t)
    return scale


def classifier(y: np.ndarray, n_classes: int, seed: int, balanced: bool = False):
    """The unfitted scikit-learn estimator for labels ``y``: ``LogisticRegressionCV`` over :data:`CS` with stratified
    inner folds (log loss), or a plain ``C = 1`` fit when a class has a single patient (no inner folds to choose C).
    ``balanced`` (``training.class_weights: balanced``): each class's patients weighted by n / (classes x count)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_classes)
    folds = int(min(5, counts[counts > 0].min()))
    weights = "balanced" if balanced else None
    if folds < 2:
        return LogisticRegression(C=1.0, max_iter=5000, tol=TOL, random_state=seed, class_weight=weights)
    return LogisticRegressionCV(
        Cs=CS,
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        scoring="neg_log_loss",
        max_iter=5000,
        tol=TOL,
        random_state=seed,
        class_weight=weights,
        **_current_api(LogisticRegressionCV),
    )


def row_space(x: np.ndarray, eps: float = FEATURE_EPS) -> tuple[np.ndarray, np.ndarray | None]:
    """``(U S, Vt)`` of ``x``'s thin SVD cut to its numerical rank when that is below its column count (module doc);
    else ``(x, None)``. The rank counts the singular values above ``s_max * max(rows, columns) * eps`` (NumPy's
    ``matrix_rank`` rule), ``eps`` that of the float32 the features are computed in: directions below it are the
    features' rounding, not their values (the largest is kept even when every feature is zero: then only the
    intercepts are fitted)."""
    if not x.size:
        return x, None
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    keep = s > s[0] * max(x.shape) * eps
    keep[0] = True
    if keep.sum() >= x.shape[1]:
        return x, None
    return u[:, keep] * s[keep], vt[keep]


def _current_api(cls) -> dict:
    """scikit-learn 1.8+: a pure L2 penalty said explicitly and the simplified fitted attributes (older: nothing)."""
    import inspect

    wanted = {"l1_ratios": (0.0,), "use_legacy_attributes": False}
    return {k: v for k, v in wanted.items() if k in inspect.signature(cls).parameters}


def _copy_into(model, clf, n_classes: int) -> None:
    """``clf``'s coefficients as ``model.linear`` (binary: the positive class's logit, 0 for the other)."""
    weight = np.zeros((n_classes, clf.coef_.shape[1]))
    bias = np.full(n_classes, ABSENT_BIAS)
    if len(clf.classes_) == 2 and clf.coef_.shape[0] == 1:
        weight[clf.classes_[1]], bias[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
        bias[clf.classes_[0]] = 0.0
    else:
        weight[clf.classes_], bias[clf.classes_] = clf.coef_, clf.intercept_
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(weight, dtype=model.linear.weight.dtype))
        model.linear.bias.copy_(torch.as_tensor(bias, dtype=model.linear.bias.dtype))
    model.eval()


def scores(model, x: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, float]:
    """Log loss (and macro-F1 for val) of a closed-form ``model`` (``model.logits``) on features ``x``; NaN
    without rows."""
    from sklearn.metrics import f1_score

    if not len(y):
        return {f"{prefix}_loss": float("nan")} | ({"val_macro_f1": float("nan")} if prefix == "val" else {})
    with torch.no_grad():
        logits = model.logits(torch.as_tensor(x))
        loss = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(y)))
    out = {f"{prefix}_loss": loss}
    if prefix == "val":
        out["val_macro_f1"] = float(f1_score(y, logits.argmax(1).numpy(), average="macro"))
    return out
