"""Fit of the boosted-trees model (:class:`clinicmm.fusion.models.trees.TreeFusion`) by scikit-learn.

``GradientBoostingClassifier`` (depth-3 trees, learning rate 0.05, 80% row subsampling, sqrt(features) per split)
grows up to :data:`MAX_TREES` rounds and stops when the log loss on an inner 15% share of the training rows has
not improved for :data:`PATIENCE` rounds (scikit-learn's ``n_iter_no_change``): the rounds are chosen on the
training rows alone, as logreg's penalty is. Too few training rows for that share to hold every class (or a
class with one row): 100 rounds, no early stopping. The fitted trees are copied into the torch module's node tables;
the validation rows are scored once for the history row the train stage and the champion choice read.
The settings are the usual textbook defaults for small tabular data, not tuned on any cohort here.
"""

from __future__ import annotations

import numpy as np
import torch

from clinicmm.config import TrainingSpec
from clinicmm.training.linear import ABSENT_BIAS, design, scores

MAX_TREES = 500
PATIENCE = 20
LEARNING_RATE = 0.05
MAX_DEPTH = 3
VALIDATION_FRACTION = 0.15


def fit_trees(model, train: list, val: list, knowledge, dims, spec: TrainingSpec, n_classes: int) -> list[dict]:
    """Fit ``model`` on ``train``; its history: one row with train / val log loss, val macro-F1 and the rounds."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.utils.class_weight import compute_sample_weight

    x, y = design(model, train, knowledge, dims)
    counts = np.bincount(y, minlength=n_classes)
    present = int((counts > 0).sum())
    inner = int(np.ceil(VALIDATION_FRACTION * len(y)))  # scikit-learn's stratified inner share: a row per class
    early = bool(counts[counts > 0].min() >= 2) and inner >= present and len(y) - inner >= present
    clf = GradientBoostingClassifier(
        n_estimators=MAX_TREES if early else 100,
        learning_rate=LEARNING_RATE,
        max_depth=MAX_DEPTH,
        subsample=0.8,
        max_features="sqrt",
        init="zero",  # every logit starts at 0: the trees alone carry the model (no pickled init estimator)
        validation_fraction=VALIDATION_FRACTION,
        n_iter_no_change=PATIENCE if early else None,
        random_state=spec.seed,
    )
    if len(np.unique(y)) < 2:  # one class: nothing to split on; predict it
        copy_into(model, None, n_classes, only=int(y[0]) if len(y) else 0)
    else:
        balanced = spec.class_weights == "balanced"  # each class's patients weighted n / (classes x count)
        clf.fit(x, y, sample_weight=compute_sample_weight("balanced", y) if balanced else None)
        copy_into(model, clf, n_classes)
    row = {"epoch": 1, "trees": int(getattr(clf, "n_estimators_", 0))}
    row |= scores(model, x, y, "train") | scores(model, *design(model, val, knowledge, dims), "val")
    return [row]


def copy_into(model, clf, n_classes: int, only: int = 0) -> None:
    """``clf``'s trees as ``model``'s node tables (binary: trees add to the positive class, 0 for the other)."""
    bias = np.full(n_classes, ABSENT_BIAS)
    tables: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right", "value", "tree_class")}
    depth = 0
    if clf is None:
        bias[only] = 0.0
    else:
        classes = [int(c) for c in clf.classes_]
        bias[classes] = 0.0
        per_stage = clf.estimators_.shape[1]
        targets = [classes[1]] if per_stage == 1 else classes
        for stage in clf.estimators_:
            for k, estimator in enumerate(stage):
                tree = estimator.tree_
                leaf = tree.children_left < 0
                own = np.arange(tree.node_count)
                tables["feature"].append(np.where(leaf, 0, tree.feature))
                tables["threshold"].append(np.where(leaf, np.inf, tree.threshold))
                tables["left"].append(np.where(leaf, own, tree.children_left))
                tables["right"].append(np.where(leaf, own, tree.children_right))
                tables["value"].append(clf.learning_rate * tree.value[:, 0, 0])
                tables["tree_class"].append(targets[k])
                depth = max(depth, int(tree.max_depth))
    width = max((len(t) for t in tables["feature"]), default=1)

    def pad(rows: list, dtype, fill) -> torch.Tensor:
        out = np.full((len(rows), width), fill, dtype=dtype)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return torch.as_tensor(out)

    model.set_trees(
        feature=pad(tables["feature"], np.int64, 0),
        threshold=pad(tables["threshold"], np.float64, np.inf),
        left=pad(tables["left"], np.int64, 0),
        right=pad(tables["right"], np.int64, 0),
        value=pad(tables["value"], np.float64, 0.0),
        tree_class=torch.as_tensor(np.asarray(tables["tree_class"], dtype=np.int64)),
        bias=torch.as_tensor(bias, dtype=torch.float64),
        depth=torch.as_tensor(depth, dtype=torch.long),
    )
    model.eval()
