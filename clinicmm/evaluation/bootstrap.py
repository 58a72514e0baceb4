"""Percentile-bootstrap 95% confidence intervals of classification metrics on pooled out-of-fold predictions.

Patients are resampled with replacement; the *same* resamples serve every model, so the difference between two
models has a paired interval (:func:`paired_delta`) that is much tighter than the two separate intervals suggest.
The metrics are computed in numpy, vectorised over the resamples (confusion counts, rank AUROC); they agree
with :func:`clinicmm.training.metrics.classification_metrics` (macro-F1 over the classes in y or predicted,
AUROC averaged over the classes present in y).
"""

from __future__ import annotations

import numpy as np

METRICS = ("macro_f1", "accuracy", "auroc_ovr")


def scores(y: np.ndarray, probs: np.ndarray, k: int) -> dict[str, float]:
    """Macro-F1, accuracy and macro one-vs-rest AUROC of ``probs`` (N, k) against ``y`` (N,)."""
    batch = batch_scores(np.asarray(y, dtype=int)[None], np.asarray(probs, dtype=float)[None], k)
    return {m: float(v[0]) for m, v in batch.items()}


def batch_scores(y: np.ndarray, probs: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """:func:`scores` of B samples at once: ``y`` (B, N), ``probs`` (B, N, k) -> {metric: (B,)}, vectorised."""
    from scipy.stats import rankdata

    pred = probs.argmax(2)
    hit = [(y == c) for c in range(k)]
    tp = np.stack([(h & (pred == c)).sum(1) for c, h in enumerate(hit)], 1).astype(float)
    denom = np.stack([h.sum(1) + (pred == c).sum(1) for c, h in enumerate(hit)], 1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nanmean(np.where(denom > 0, 2 * tp / denom, np.nan), axis=1)
        aucs = []
        for c, pos in enumerate(hit):
            n_pos, n_neg = pos.sum(1), (~pos).sum(1)
            ranks = rankdata(probs[:, :, c], axis=1)
            auc = ((ranks * pos).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
            aucs.append(np.where((n_pos > 0) & (n_neg > 0), auc, np.nan))
        auroc = np.nanmean(np.stack(aucs, 1), axis=1)
    return {"macro_f1": f1, "accuracy": tp.sum(1) / y.shape[1], "auroc_ovr": auroc}


def resamples(n: int, b: int, seed: int) -> np.ndarray:
    """(b, n) indices of ``b`` bootstrap resamples of ``n`` patients (seeded: every model gets the same ones)."""
    if n < 2 or b < 1:
        raise ValueError(f"Expected n >= 2 patients and b >= 1 resamples (got n={n}, b={b})")
    return np.random.default_rng(seed).integers(0, n, size=(b, n))


def intervals(y: np.ndarray, probs: np.ndarray, k: int, idx: np.ndarray) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of each metric over the resamples ``idx``."""
    draws = batch_scores(np.asarray(y)[idx], np.asarray(probs)[idx], k)
    return {m: _percentiles(draws[m]) for m in METRICS}


def paired_delta(
    y: np.ndarray, probs: np.ndarray, reference: np.ndarray, k: int, idx: np.ndarray, metric: str = "macro_f1"
) -> tuple[float, float, float]:
    """``metric(probs) - metric(reference)`` on all patients and its paired 95% interval over ``idx``."""
    point = scores(y, probs, k)[metric] - scores(y, reference, k)[metric]
    y = np.asarray(y)
    draws = (
        batch_scores(y[idx], np.asarray(probs)[idx], k)[metric]
        - batch_scores(y[idx], np.asarray(reference)[idx], k)[metric]
    )
    return (point, *_percentiles(draws))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
