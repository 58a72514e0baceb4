"""Split-conformal prediction sets: every cancer type the model cannot rule out at a chosen coverage.

A calibration split (the validation patients, unseen by the weights' gradient steps) gives one
non-conformity score per patient: how badly the model ranked the true type. The threshold is the
finite-sample quantile of those scores, the ``ceil((n + 1) * coverage)``-th smallest, so that on new patients
exchangeable with the calibration ones the set holds the true type with probability >= ``coverage``
(Vovk et al. 2005; Angelopoulos & Bates 2021, "A gentle introduction to conformal prediction"). The set's
size is the model's own statement of how sure it is: one type, a short differential, or "cannot tell".

Two standard scores:

- ``lac`` (least ambiguous set-valued classifier, Sadinle et al. 2019): ``1 - p_k``. The smallest sets on
  average; a class is in the set when its probability is at least ``1 - threshold``.
- ``aps`` (adaptive prediction sets, Romano et al. 2020, non-randomised): the probability mass of every class
  ranked at or above ``k``. Sets grow for uncertain patients and shrink for confident ones.

A set is never empty: a patient whose every class falls outside gets the top class (this only raises
coverage). Pure numpy on ``probs`` (N, C) and integer labels ``y`` (N,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Score = Literal["lac", "aps"]
SCORES: tuple[str, ...] = ("lac", "aps")


def class_scores(probs: np.ndarray, score: Score = "lac") -> np.ndarray:
    """Non-conformity of every class for every patient, (N, C): lower means more plausible."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"Expected probs of shape (N, C) (got shape {probs.shape})")
    if score == "lac":
        return 1.0 - probs
    if score == "aps":  # mass of every class at least as probable as k (ties count together, so ties share a score)
        return (probs[:, None, :] * (probs[:, None, :] >= probs[:, :, None])).sum(axis=2)
    raise ValueError(f"Expected score to be one of {', '.join(SCORES)} (got {score!r})")


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The ``ceil((n + 1) * coverage)``-th smallest score; ``inf`` when n is too small for that coverage
    (every class then stays in every set, which keeps the guarantee honestly)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"Expected coverage in (0, 1) (got {coverage!r})")
    rank = math.ceil((len(scores) + 1) * coverage)
    return float(scores[rank - 1]) if rank <= len(scores) else math.inf


def min_calibration_size(coverage: float) -> int:
    """Fewest calibration patients for which ``coverage`` gives a finite threshold."""
    n = 1
    while math.ceil((n + 1) * coverage) > n:
        n += 1
    return n


@dataclass(frozen=True)
class SplitConformal:
    """A fitted split-conformal set predictor: the score, the target coverage and the threshold."""

    score: Score
    coverage: float
    threshold: float
    n_calibration: int

    @classmethod
    def fit(cls, probs: np.ndarray, y: np.ndarray, coverage: float = 0.9, score: Score = "lac") -> SplitConformal:
        """Threshold from the calibration patients' true-class scores."""
        probs, y = np.asarray(probs), np.asarray(y)
        if y.shape != (len(probs),) or (len(y) and (y.min() < 0 or y.max() >= probs.shape[1])):
            raise ValueError(
                f"Expected y of shape ({len(probs)},) with class indices in [0, {probs.shape[1]}) (got {y!r})"
            )
        true_scores = class_scores(probs, score)[np.arange(len(y)), y]
        return cls(score, float(coverage), conformal_quantile(true_scores, coverage), int(len(y)))

    def sets(self, probs: np.ndarray) -> np.ndarray:
        """Boolean membership (N, C); never an empty row (the top class is added)."""
        probs = np.asarray(probs, dtype=np.float64)
        member = class_scores(probs, self.score) <= self.threshold
        empty = ~member.any(axis=1)
        member[empty, probs[empty].argmax(axis=1)] = True
        return member

    def to_dict(self) -> dict:
        threshold = self.threshold if math.isfinite(self.threshold) else None  # JSON has no infinity
        return {
            "score": self.score,
            "coverage": self.coverage,
            "threshold": threshold,
            "n_calibration": self.n_calibration,
        }

    @classmethod
    def from_dict(cls, data: dict) -> SplitConformal:
        if data.get("score") not in SCORES or not 0.0 < float(data.get("coverage", -1)) < 1.0:
            raise ValueError(f"Expected score in {SCORES} and coverage in (0, 1) (got {data!r})")
        threshold = math.inf if data.get("threshold") is None else float(data["threshold"])
        return cls(data["score"], float(data["coverage"]), threshold, int(data.get("n_calibration", 0)))


def set_metrics(member: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Empirical coverage (share of patients whose set holds the true class) and mean set size."""
    member, y = np.asarray(member, dtype=bool), np.asarray(y)
    if not len(y):
        return {"coverage": math.nan, "mean_set_size": math.nan}
    return {"coverage": float(member[np.arange(len(y)), y].mean()), "mean_set_size": float(member.sum(axis=1).mean())}
