"""Per-class decision biases tuned for macro-F1, against the plain argmax, on a finished ``clinicmm compare``.

Macro-F1 weighs a rare type as much as a common one, so moving each class's logit by a constant chosen on held-out
patients (threshold moving) can raise a rare type's recall. Is it worth building into the registered model? This
script answers it on any cohort without training again: it reads the compare's out-of-fold probabilities
(``WORKDIR/compare/oof.parquet``) and, for each fold, fits the biases (coordinate ascent over a grid, class 0 fixed)
on other folds' patients -- a random subset the size of a validation split (``--val-share`` of the training
patients, what the model would really have), and all of them (the optimistic bound) -- then applies them to the
fold's own patients. Prints per model the pooled macro-F1 of the argmax and of both tunings, the paired bootstrap
difference with its 95% CI, and the smallest per-class recall. Plain prints, no assertions.

    .venv/bin/python benchmarks/bias_tuning.py WORKDIR/compare/oof.parquet [...] [--models logreg,kg_gnn]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

GRID = np.linspace(-3.0, 3.0, 61)  # log-odds added to one class at a time


def macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    return float(f1_score(y, pred, average="macro", labels=range(k), zero_division=0))


def fit_bias(logp: np.ndarray, y: np.ndarray, k: int, sweeps: int = 3) -> np.ndarray:
    """Per-class additive biases (class 0 fixed at 0) maximising macro-F1 of ``argmax(logp + b)`` on these rows."""
    bias = np.zeros(k)
    best = macro_f1(y, logp.argmax(1), k)
    for _ in range(sweeps):
        for c in range(1, k):
            for g in GRID:
                trial = bias.copy()
                trial[c] = g
                score = macro_f1(y, (logp + trial).argmax(1), k)
                if score > best + 1e-12:
                    best, bias = score, trial
    return bias


def paired(y: np.ndarray, a: np.ndarray, b: np.ndarray, k: int, draws: int = 1000) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    diffs = []
    for _ in range(draws):
        i = rng.integers(0, len(y), len(y))
        diffs.append(macro_f1(y[i], a[i], k) - macro_f1(y[i], b[i], k))
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def min_recall(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    return min(float(((pred == c) & (y == c)).sum() / max((y == c).sum(), 1)) for c in range(k))


def evaluate(path: str, models: list[str] | None, val_share: float, seed: int) -> None:
    oof = pd.read_parquet(path)
    classes = sorted(oof["label"].unique())
    k = len(classes)
    y = oof["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    folds = oof["fold"].to_numpy()
    present = [c.split(".prob_")[0] for c in oof.columns if c.endswith(f".prob_{classes[0]}")]
    print(f"{path}: {len(y)} patients, {k} classes (smallest {np.bincount(y).min()})")
    for model in [m for m in (models or present) if m in present]:
        logp = np.log(np.clip(oof[[f"{model}.prob_{c}" for c in classes]].to_numpy(), 1e-9, 1.0))
        base = logp.argmax(1)
        tuned = {"validation-sized": base.copy(), "all other folds": base.copy()}
        rng = np.random.default_rng(seed)
        for fold in np.unique(folds):
            test, other = folds == fold, np.flatnonzero(folds != fold)
            size = min(len(other), max(3 * k, round(val_share * len(other))))
            subset = rng.choice(other, size, replace=False)
            tuned["validation-sized"][test] = (logp[test] + fit_bias(logp[subset], y[subset], k)).argmax(1)
            tuned["all other folds"][test] = (logp[test] + fit_bias(logp[other], y[other], k)).argmax(1)
        f0 = macro_f1(y, base, k)
        parts = [f"argmax {f0:.3f} (min recall {min_recall(y, base, k):.2f})"]
        for name, pred in tuned.items():
            low, high = paired(y, pred, base, k)
            f1 = macro_f1(y, pred, k)
            parts.append(
                f"{name} {f1:.3f}, {f1 - f0:+.3f} [{low:+.3f}, {high:+.3f}] (min recall {min_recall(y, pred, k):.2f})"
            )
        print(f"  {model}: " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("oof", nargs="+", help="compare/oof.parquet files")
    parser.add_argument("--models", default="", help="comma-separated (default: every model in the file)")
    parser.add_argument("--val-share", type=float, default=0.15, help="compare.val: the validation share (0.15)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in args.oof:
        evaluate(path, [m for m in args.models.split(",") if m] or None, args.val_share, args.seed)


if __name__ == "__main__":
    main()
