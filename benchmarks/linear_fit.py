"""The closed-form logistic regression with more features than patients: fitted on the raw features against the
same fit on the SVD of the rows (:func:`clinicmm.training.linear.row_space`, what ``fit_linear`` does), in one
process on the same design matrix.

The design is the one ``kg_logreg`` sees on TCGA-KIPAN's training split (the three omics plus Reactome's pooled
gene sets: 130 patients x ~5,000 features) when ``workflows/tcga_kipan_prepare.py`` has written the tables and
``.clinicmm/tcga_kipan`` holds its ingest and encode stages (``clinicmm compare workflows/tcga_kipan.yaml`` once);
otherwise a synthetic one of the same shape (low-rank correlated features, as overlapping gene sets give). Both
fits are scikit-learn's ``LogisticRegressionCV`` with clinicmm's grid, folds and tolerance (1e-6), and the raw fit
once more at scikit-learn's default tolerance 1e-4, as clinicmm fitted it before. Prints each time, the ratios, the
chosen C of each, and the largest difference of the predicted probabilities on the rows (the row-space fit solves
the same problem: what differs is the solvers' tolerance). Plain prints, no assertions.

``--pooled`` measures the rank cut instead: a design of a few dozen values per patient spread over thousands of
features (what ``kg_logreg`` sees when a cohort's only omics are arm-level copy number pooled over the gene sets:
1,000 patients, 42 arms, 6,000 pooled features computed in float32, as the model computes them). Its rank is 42, but
rounding leaves every other direction a singular value of ~1e-7 of the largest, so the former cut (1e-10 of the
largest) fitted all 1,000 directions; the cut now (``s_max * max(rows, columns) * float32 eps``, NumPy's
``matrix_rank`` rule) fits 42. Prints both times, the ratio, the chosen C of each and the largest difference of the
predicted probabilities on the rows.

    .venv/bin/python benchmarks/linear_fit.py [--repeats 3] [--synthetic | --pooled]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def kipan_design() -> tuple[np.ndarray, np.ndarray, str] | None:
    """kg_logreg's design matrix and labels on KIPAN's training split, or None without the encoded cohort."""
    if not (REPO / ".clinicmm" / "tcga_kipan" / "encode").is_dir():
        return None
    from clinicmm.config import load_workflow
    from clinicmm.keys import Split
    from clinicmm.training.data import TrainingData, to_evidence
    from clinicmm.training.fit import fit_model
    from clinicmm.training.linear import design

    wf = load_workflow(REPO / "workflows" / "tcga_kipan.yaml")
    data = TrainingData(wf)
    train = data.rows(Split.TRAIN)
    fitted = fit_model("kg_logreg", data, train, data.rows(Split.VAL), wf.training, progress=False)
    items = to_evidence(data.encoded, *train, data.kg, fitted.scaler)
    x, y = design(fitted.model, items, fitted.hetero, fitted.dims)
    return x, y, "TCGA-KIPAN training split, kg_logreg's features"


def synthetic_design(n: int = 130, p: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 40)) @ rng.normal(size=(40, p)) / 6 + rng.normal(size=(n, p))
    x[:, :60] += np.repeat(np.eye(3)[y], 20, axis=1)
    return x, y, f"synthetic, {n} x {p}, rank-40 correlation"


def pooled_design(n: int = 1000, regions: int = 42, sets: int = 6000, seed: int = 0):
    """Arm values and their gene-set means (each set the mean of a random few arms), z-scored, in float32."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    arms = rng.normal(size=(n, regions))
    arms[:, :8] += 0.5 * np.repeat(np.eye(4)[y], 2, axis=1)
    members = rng.random((regions, sets)) < 0.05
    members[rng.integers(0, regions, sets), np.arange(sets)] = True
    pooled = arms.astype(np.float32) @ (members / members.sum(0)).astype(np.float32)
    x = np.hstack([arms.astype(np.float32), pooled])
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float64), y, f"synthetic pooled arms, {regions} arms in {sets} gene-set means (rank {regions})"


def rank_cut(x: np.ndarray, y: np.ndarray, repeats: int) -> None:
    from clinicmm.training.linear import row_space

    cuts = {"cut at 1e-10 (before)": 1e-10 / max(x.shape), "cut at float32 rounding (now)": None}
    times, fits = {k: [] for k in cuts}, {}
    for _ in range(repeats):
        for name, eps in cuts.items():
            start = time.perf_counter()
            z, basis = row_space(x) if eps is None else row_space(x, eps)
            fits[name] = (fit(z, y), basis)
            times[name].append(time.perf_counter() - start)
    for name, t in times.items():
        print(f"{name:>30}: {fits[name][1].shape[0]:5d} directions, best of {repeats} {min(t):7.2f} s")
    before, now = (min(t) for t in times.values())
    print(f"ratio: the former cut takes {before / now:.1f}x the time of the cut now")
    probs = {}
    for name, (clf, basis) in fits.items():
        probs[name] = probabilities(clf.coef_ @ basis, clf.intercept_, x)
        print(f"chosen C, {name}: {float(np.atleast_1d(clf.C_)[0]):.4g}")
    gap = np.abs(probs["cut at 1e-10 (before)"] - probs["cut at float32 rounding (now)"]).max()
    print(f"largest difference of the predicted probabilities on these rows: {gap:.2e}")


def fit(x: np.ndarray, y: np.ndarray, tol: float | None = None):
    """``x``, ``y`` fitted by the estimator ``fit_linear`` uses (its grid, folds and tolerance, or ``tol``)."""
    from clinicmm.training.linear import classifier

    clf = classifier(y, int(y.max()) + 1, seed=0)
    return clf.set_params(tol=tol).fit(x, y) if tol is not None else clf.fit(x, y)


def probabilities(coef: np.ndarray, intercept: np.ndarray, x: np.ndarray) -> np.ndarray:
    logits = x @ coef.T + intercept
    if logits.shape[1] == 1:  # binary: scikit-learn's one logit
        logits = np.hstack([np.zeros_like(logits), logits])
    logits -= logits.max(1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many fits each")
    parser.add_argument("--synthetic", action="store_true", help="the synthetic design even where KIPAN is encoded")
    parser.add_argument("--pooled", action="store_true", help="the rank cut on a pooled arm-level design")
    args = parser.parse_args()
    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    if args.pooled:
        x, y, what = pooled_design()
        print(f"design: {what}: {x.shape[0]} patients x {x.shape[1]} features")
        rank_cut(x, y, args.repeats)
        return
    from clinicmm.training.linear import row_space

    found = None if args.synthetic else kipan_design()
    x, y, what = found if found is not None else synthetic_design()
    print(f"design: {what}: {x.shape[0]} patients x {x.shape[1]} features")
    times = {"raw, tol 1e-4 (before)": [], "raw features": [], "row space (SVD)": []}
    for _ in range(args.repeats):  # they take turns, so a change in the machine's load hits each alike
        start = time.perf_counter()
        before = fit(x, y, tol=1e-4)
        times["raw, tol 1e-4 (before)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        raw = fit(x, y)
        times["raw features"].append(time.perf_counter() - start)
        start = time.perf_counter()
        z, basis = row_space(x)
        small = fit(z, y)
        times["row space (SVD)"].append(time.perf_counter() - start)
    for name, t in times.items():
        print(f"{name:>22}: best of {args.repeats} {min(t):7.2f} s")
    fast = min(times["row space (SVD)"])
    print(
        f"ratio to the row space: raw at the same tolerance {min(times['raw features']) / fast:.1f}x, raw as "
        f"clinicmm fitted it before (tol 1e-4) {min(times['raw, tol 1e-4 (before)']) / fast:.1f}x"
    )
    print(f"chosen C: raw {float(np.atleast_1d(raw.C_)[0]):.4g}, row space {float(np.atleast_1d(small.C_)[0]):.4g}")
    coef = small.coef_ @ basis if basis is not None else small.coef_
    ours = probabilities(coef, small.intercept_, x)
    for name, other in (("same tolerance", raw), ("tol 1e-4", before)):
        gap = np.abs(probabilities(other.coef_, other.intercept_, x) - ours).max()
        print(f"largest difference of the predicted probabilities on these rows, raw at {name}: {gap:.2e}")


if __name__ == "__main__":
    main()
