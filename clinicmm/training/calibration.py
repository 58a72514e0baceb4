"""Calibration of predicted probabilities: does a confidence of 0.8 mean right 80% of the time?

Pure numpy/pandas functions on ``probs`` (N, C) and integer labels ``y`` (N,). Confidence is the top-label
probability ``probs.max(1)``; a prediction is correct when ``probs.argmax(1) == y``. Confidences fall into
``n_bins`` equal-width bins ``(lower, upper]`` over [0, 1] (a confidence of exactly 0 goes to the first bin).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _check(probs: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate the inputs once and return them as float / int arrays."""
    probs, y = np.asarray(probs), np.asarray(y)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"Expected probs of shape (N, C) with N, C >= 1 (got shape {probs.shape})")
    if y.shape != (probs.shape[0],):
        raise ValueError(f"Expected y of shape ({probs.shape[0]},) to match probs (got shape {y.shape})")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= probs.shape[1]:
        raise ValueError(f"Expected integer class indices in [0, {probs.shape[1]}) in y (got dtype {y.dtype}, "
                         f"range [{y.min()}, {y.max()}])")
    probs = probs.astype(np.float64)
    if not np.isfinite(probs).all() or probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise ValueError(f"Expected probabilities in [0, 1] in probs (got range [{np.nanmin(probs)}, "
                         f"{np.nanmax(probs)}], finite: {bool(np.isfinite(probs).all())}); apply softmax first")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"Expected n_bins to be an integer >= 1 (got {n_bins!r})")
    return probs, y.astype(np.int64)


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """One row per confidence bin: bin_lower, bin_upper, count, confidence (mean), accuracy.

    Empty bins are kept, with count 0 and NaN confidence and accuracy, so the frame always has ``n_bins`` rows.
    """
    probs, y = _check(probs, y, n_bins)
    conf = np.clip(probs.max(axis=1), 0.0, 1.0)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return pd.DataFrame(
        {"bin_lower": edges[:-1], "bin_upper": edges[1:], "count": count.astype(np.int64),
         "confidence": np.where(count > 0, mean_conf, np.nan), "accuracy": np.where(count > 0, accuracy, np.nan)}
    )


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: sum over bins of ``|accuracy - confidence| * n_bin / N``; 0 is perfectly calibrated."""
    bins = reliability_bins(probs, y, n_bins)
    used = bins[bins["count"] > 0]
    gap = (used["accuracy"] - used["confidence"]).abs() * used["count"]
    return float(gap.sum() / bins["count"].sum())
