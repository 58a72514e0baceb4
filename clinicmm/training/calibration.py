"""Calibration of predicted probabilities: does a confidence of 0.8 mean right 80% of the time?

Pure numpy/pandas functions on ``probs`` (N, C) and integer labels ``y`` (N,). Confidence is the top-label
probability ``probs.max(1)``; a prediction is correct when ``probs.argmax(1) == y``. Confidences fall into
``n_bins`` equal-width bins ``(lower, upper]`` over [0, 1] (a confidence of exactly 0 goes to the first bin).

Temperature scaling (one parameter fitted on the validation split) fixes over- or under-confidence without
changing any prediction. It is only kept when it helps on patients it was not fitted on: the split is cross-fitted
(``CALIBRATION_FOLDS`` folds, each scored with a temperature fitted on the others), and when that held-out NLL is
not clearly lower than the uncalibrated NLL (by more than one standard error of the per-patient gain) -- or the
split has fewer than ``MIN_TEMPERATURE_N`` patients -- the fit is refused and ``T = 1``. The validation split also chose the early-stopping epoch, which makes its NLL look better than
it is; :func:`calibration_share` cuts a stratified share off it that early stopping does not see, for a caller that
can fit the temperature there instead. :class:`Calibration` bundles it with the conformal sets
(:mod:`clinicmm.training.conformal`) and the abstention threshold, and turns probabilities into the columns
a prediction carries: the top-3 differential, the prediction set and the decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from clinicmm.training.conformal import SplitConformal, set_metrics


def _check(probs: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate the inputs once and return them as float / int arrays."""
    probs, y = np.asarray(probs), np.asarray(y)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] == 0:
        raise ValueError(f"Expected probs of shape (N, C) with N, C >= 1 (got shape {probs.shape})")
    if y.shape != (probs.shape[0],):
        raise ValueError(f"Expected y of shape ({probs.shape[0]},) to match probs (got shape {y.shape})")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= probs.shape[1]:
        raise ValueError(
            f"Expected integer class indices in [0, {probs.shape[1]}) in y (got dtype {y.dtype}, "
            f"range [{y.min()}, {y.max()}])"
        )
    probs = probs.astype(np.float64)
    if not np.isfinite(probs).all() or probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise ValueError(
            f"Expected probabilities in [0, 1] in probs (got range [{np.nanmin(probs)}, "
            f"{np.nanmax(probs)}], finite: {bool(np.isfinite(probs).all())}); apply softmax first"
        )
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
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "count": count.astype(np.int64),
            "confidence": np.where(count > 0, mean_conf, np.nan),
            "accuracy": np.where(count > 0, accuracy, np.nan),
        }
    )


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: sum over bins of ``|accuracy - confidence| * n_bin / N``; 0 is perfectly calibrated."""
    bins = reliability_bins(probs, y, n_bins)
    used = bins[bins["count"] > 0]
    gap = (used["accuracy"] - used["confidence"]).abs() * used["count"]
    return float(gap.sum() / bins["count"].sum())


# ------------------------------------------------------------------------------ temperature scaling


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the same as dividing the logits by ``T`` (softmax forgets a per-row constant), so
    it works on the probabilities a model already returns. The top class never changes; ``T > 1`` softens."""
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def _nll(logp: np.ndarray, y: np.ndarray, beta: float) -> float:
    z = logp * beta
    z -= z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


CALIBRATION_FOLDS = 5  # cross-fitting folds of the calibration data (fewer when it is small: 2 patients a fold)
MIN_TEMPERATURE_N = 10  # fewer calibration patients than this: no temperature is fitted (T = 1)
MIN_NLL_GAIN = 1e-4  # nats: the held-out NLL must drop by more than this for a fitted temperature to be kept
GAIN_STANDARD_ERRORS = 1.0  # ... and by more than this many standard errors of the per-patient NLL gain
FOLD_SEED = 0


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels ``y`` under ``probs`` (probabilities clipped at 1e-12)."""
    probs, y = _check(probs, y, 1)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the negative log-likelihood of ``y`` (Guo et al. 2017, "On calibration of
    modern neural networks"). The NLL is convex in ``1 / T``, so a bounded scalar search finds the optimum.

    When every prediction is right the likelihood keeps rising as ``T -> 0`` (ever sharper, never wrong on these
    patients): there is nothing to learn, and sharpening would only make future mistakes confident, so ``T = 1``.
    """
    from scipy.optimize import minimize_scalar

    probs, y = _check(probs, y, 1)
    if (probs.argmax(axis=1) == y).all():
        return 1.0
    logp = np.log(np.clip(probs, 1e-12, 1.0))
    res = minimize_scalar(
        lambda b: _nll(logp, y, b), bounds=(1.0 / bounds[1], 1.0 / bounds[0]), method="bounded", options={"xatol": 1e-6}
    )
    return float(1.0 / res.x)


def choose_temperature(probs: np.ndarray, y: np.ndarray, folds: int = CALIBRATION_FOLDS) -> tuple[float, dict]:
    """The temperature to use on these calibration data, and the record of how it was chosen.

    The fitted temperature (:func:`fit_temperature` on all of them) is kept only when cross-fitting shows it
    generalises: the data are cut into ``folds`` (seeded, at least 2 patients each), each fold is scaled with the
    temperature fitted on the other folds, and the NLL of those held-out predictions must be lower than the
    uncalibrated NLL by more than ``MIN_NLL_GAIN`` and by more than ``GAIN_STANDARD_ERRORS`` standard errors of the
    per-patient gain (so a gain that noise alone would give is not taken). Otherwise -- or with fewer than ``MIN_TEMPERATURE_N`` patients --
    ``T = 1``: calibration never makes the predictions worse than the model's own on data it did not fit.

    The record (numbers only, no patient data): ``temperature_fitted``, ``temperature_refused`` (1.0 when T = 1 was
    kept instead), ``nll_uncalibrated`` / ``nll`` and ``ece_uncalibrated`` / ``ece`` (before / after, with the chosen
    T), ``nll_crossfit`` / ``ece_crossfit`` (held-out, each fold with the others' T), ``nll_gain_se`` (the standard
    error of the cross-fitted gain) and ``folds``.
    """
    probs, y = _check(probs, y, 1)
    before = {"nll_uncalibrated": nll(probs, y), "ece_uncalibrated": expected_calibration_error(probs, y)}
    k = min(int(folds), len(y) // 2)
    if len(y) < MIN_TEMPERATURE_N or k < 2:
        record = before | {"temperature_fitted": 1.0, "temperature_refused": 1.0, "folds": 0.0}
        return 1.0, record | {"nll": before["nll_uncalibrated"], "ece": before["ece_uncalibrated"]}
    fitted = fit_temperature(probs, y)
    held_out = np.empty_like(probs)
    for fold in np.array_split(np.random.default_rng(FOLD_SEED).permutation(len(y)), k):
        rest = np.setdiff1d(np.arange(len(y)), fold)
        held_out[fold] = temperature_scale(probs[fold], fit_temperature(probs[rest], y[rest]))
    rows = np.arange(len(y))
    gain = np.log(np.clip(held_out[rows, y], 1e-12, 1.0)) - np.log(np.clip(probs[rows, y], 1e-12, 1.0))
    se = float(gain.std(ddof=1) / np.sqrt(len(y)))
    crossfit = {"nll_crossfit": nll(held_out, y), "ece_crossfit": expected_calibration_error(held_out, y)}
    keep = float(gain.mean()) > max(MIN_NLL_GAIN, GAIN_STANDARD_ERRORS * se)
    temperature = fitted if keep else 1.0
    after = temperature_scale(probs, temperature)
    record = before | crossfit | {"nll": nll(after, y), "ece": expected_calibration_error(after, y)}
    record |= {"nll_gain_se": se, "temperature_fitted": fitted, "temperature_refused": 0.0 if keep else 1.0}
    record["folds"] = float(k)
    return temperature, record


def calibration_share(y: np.ndarray, share: float, seed: int = FOLD_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a validation split cut in two, stratified by class: (early stopping, calibration).

    The calibration part (``share`` of each class, rounded; a class with one patient stays with early stopping)
    is for :func:`fit_calibration` only, so the temperature is fitted on patients that did not choose the epoch.
    """
    y = np.asarray(y)
    if not 0 < share < 1:
        raise ValueError(f"Expected a calibration share in (0, 1) (got {share!r})")
    rng = np.random.default_rng(seed)
    calib: list[int] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        calib += members[: int(round(share * len(members))) if len(members) > 1 else 0].tolist()
    calib_idx = np.sort(np.asarray(calib, dtype=np.int64))
    return np.setdiff1d(np.arange(len(y)), calib_idx), calib_idx


# ------------------------------------------------------------------- what a prediction carries with it

ABSTAIN = "abstain: refer for review"
PREDICT = "predict"
TOP_K = 3


@dataclass(frozen=True)
class Calibration:
    """What turns a model's raw probabilities into ones a clinician can act on, stored beside the weights
    (``calibration.json`` in the bundle): a temperature, a split-conformal set predictor and an optional
    confidence threshold below which the answer is "abstain: refer for review". The default is the identity
    (``T = 1``, no sets, never abstain), which is what a bundle saved before calibration existed loads as."""

    temperature: float = 1.0
    conformal: SplitConformal | None = None
    abstain_below: float | None = None
    validation: dict = field(default_factory=dict)  # n, NLL/ECE before/after/cross-fitted (choose_temperature)

    @classmethod
    def fit(cls, probs: np.ndarray, y: np.ndarray, spec) -> Calibration:
        """Fit on the validation split's raw probabilities; ``spec`` is a :class:`clinicmm.config.CalibrationSpec`.

        The temperature is the one :func:`choose_temperature` keeps (``T = 1`` unless it lowers the held-out NLL);
        ``validation`` records the NLL and ECE before and after it, all numbers (they are logged as metrics)."""
        probs, y = _check(probs, y, 1)
        if spec.temperature:
            temperature, record = choose_temperature(probs, y)
        else:
            temperature = 1.0
            nll_1, ece_1 = nll(probs, y), expected_calibration_error(probs, y)
            record = {"nll_uncalibrated": nll_1, "nll": nll_1, "ece_uncalibrated": ece_1, "ece": ece_1}
        calibrated = temperature_scale(probs, temperature)
        conformal = SplitConformal.fit(calibrated, y, spec.coverage, spec.score) if spec.coverage is not None else None
        return cls(temperature, conformal, spec.abstain_below, {"n": int(len(y))} | record)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (the identity when ``T = 1``)."""
        probs = np.asarray(probs)
        return probs if self.temperature == 1.0 or not len(probs) else temperature_scale(probs, self.temperature)

    def columns(self, probs: np.ndarray, classes: list[str]) -> list[dict]:
        """Per patient: the top-3 differential, the conformal set and the decision, from calibrated ``probs``."""
        probs = np.asarray(probs, dtype=np.float64)
        member = self.conformal.sets(probs) if self.conformal is not None else None
        rows = []
        for i, p in enumerate(probs):
            order = np.argsort(-p, kind="stable")
            rec = empty_columns()
            for k, j in enumerate(order[:TOP_K], start=1):
                rec[f"top{k}"], rec[f"top{k}_prob"] = classes[j], float(p[j])
            if member is not None:
                chosen = [classes[j] for j in order if member[i, j]]  # most probable first
                rec["prediction_set"], rec["set_size"] = "+".join(chosen), len(chosen)
            rec["decision"] = ABSTAIN if self.abstains(p[order[0]]) else PREDICT
            rows.append(rec)
        return rows

    def abstains(self, top_probability: float | np.ndarray) -> np.ndarray:
        """True where the calibrated top probability is below ``abstain_below`` (never without a threshold)."""
        top = np.asarray(top_probability, dtype=np.float64)
        return top < self.abstain_below if self.abstain_below is not None else np.zeros(top.shape, dtype=bool)

    def test_metrics(self, probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """On calibrated ``probs`` of the test split: coverage vs its target, mean set size, abstention rate and
        the accuracy of the predictions the model did not abstain on."""
        out = {"temperature": self.temperature}
        if not len(y):  # an empty test split: nothing to measure
            return out
        probs, y = _check(probs, y, 1)
        if self.conformal is not None:
            out |= {"coverage_target": self.conformal.coverage} | set_metrics(self.conformal.sets(probs), y)
        kept = ~self.abstains(probs.max(axis=1))
        out["abstention_rate"] = float(1.0 - kept.mean())
        out["accuracy_non_abstained"] = (
            float((probs[kept].argmax(axis=1) == y[kept]).mean()) if kept.any() else float("nan")
        )
        return out

    def to_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "conformal": self.conformal.to_dict() if self.conformal else None,
            "abstain_below": self.abstain_below,
            "validation": self.validation,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        temperature = float(data.get("temperature", 1.0))
        abstain = data.get("abstain_below")
        if not (np.isfinite(temperature) and temperature > 0) or (abstain is not None and not 0 < float(abstain) <= 1):
            raise ValueError(
                f"Expected a positive temperature and abstain_below in (0, 1] or null (got {temperature!r}, {abstain!r})"
            )
        conformal = SplitConformal.from_dict(data["conformal"]) if data.get("conformal") else None
        return cls(
            temperature, conformal, None if abstain is None else float(abstain), dict(data.get("validation", {}))
        )


def empty_columns() -> dict:
    """The differential / set / decision columns of a patient that was not scored."""
    top = {k: v for i in range(1, TOP_K + 1) for k, v in ((f"top{i}", ""), (f"top{i}_prob", np.nan))}
    return top | {"prediction_set": "", "set_size": np.nan, "decision": ""}


def fit_calibration(name: str, val_probs: np.ndarray, val_y: np.ndarray, spec) -> Calibration:
    """Temperature and conformal threshold of model ``name`` from the validation split (``spec``: the workflow's
    calibration settings); identity, with a warning, when the split has no patient. Logs the fitted temperature,
    whether it was kept, and the NLL and ECE before and after (numbers only)."""
    import logging

    from clinicmm.training.conformal import min_calibration_size

    log = logging.getLogger("clinicmm")
    if not len(val_y):
        log.warning("calibration %s: the validation split is empty; predictions stay uncalibrated, without sets", name)
        return Calibration(abstain_below=spec.abstain_below)
    if spec.coverage is not None and len(val_y) < (need := min_calibration_size(spec.coverage)):
        log.warning(
            "calibration %s: %d validation patients, coverage %.2f needs %d: every set holds every class; "
            "raise split.val or lower calibration.coverage",
            name,
            len(val_y),
            spec.coverage,
            need,
        )
    calibration = Calibration.fit(val_probs, val_y, spec)
    v = calibration.validation
    if spec.temperature:
        if not v.get("folds"):
            log.warning(
                "calibration %s: %d validation patients, temperature scaling needs %d: T = 1 (raise split.val)",
                name, len(val_y), MIN_TEMPERATURE_N,
            )  # fmt: skip
        else:
            log.info(
                "calibration %s: fitted T = %.3f %s; validation NLL %.4f -> %.4f (cross-fitted %.4f), ECE %.4f -> %.4f",
                name, v["temperature_fitted"],
                "refused (it does not lower the held-out NLL), T = 1" if v["temperature_refused"] else "kept",
                v["nll_uncalibrated"], v["nll"], v["nll_crossfit"], v["ece_uncalibrated"], v["ece"],
            )  # fmt: skip
    return calibration
