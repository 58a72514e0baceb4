"""A small informative layer beside a large redundant one: what ``training.linear_blocks`` does to logreg.

A generated cohort (not a real one; the real cohorts are measured with ``benchmarks/recipe.py --models logreg
--variants "equal:linear_blocks=equal"``): three classes, 8 expression genes of which two per class are raised
by ``--fold`` x, and copy number as a hospital's segment file gives it, read by clinicmm's own segment reader
(:func:`clinicmm.ingest.segments.band_means`, hg19's 862 bands): about 30 random breakpoints per genome with
segment means N(0, 0.3), plus one class-specific focal gain (17q12, 14q21, 8q24) of ``--gain``. Every band is a
column, and neighbouring bands share their segments, so the copy-number layer is ~850 columns of highly
redundant noise around one weak focal signal.

Per fold (stratified 5-fold, seed 0): columns standardised on the training rows, then (``equal``) scaled per block
as :func:`clinicmm.training.linear.block_scale` does (every block the same total variance) or not (``none``), then
scikit-learn's ``LogisticRegressionCV`` as :mod:`clinicmm.training.linear` fits it. Prints the pooled out-of-fold macro-F1 of the
expression alone, the bands alone and both under each rule, the mean of ``--draws`` generated cohorts. Minutes
on 2 CPU cores.

    .venv/bin/python benchmarks/linear_blocks.py [--patients 150] [--draws 3] [--fold 1.5] [--gain 1.0]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

FOCAL = {0: ("17", 35_000_000, 40_000_000), 1: ("14", 36_000_000, 38_000_000), 2: ("8", 127_000_000, 129_000_000)}


def cohort(n: int, seed: int, fold: float, gain: float, breaks: int = 30, sd: float = 0.3):
    """``(labels, log2 expression (n, 8), band values (n, bands))`` of one generated cohort."""
    from clinicmm.ingest.segments import band_means, bands

    rng = np.random.default_rng(seed)
    table = bands("hg19")
    y = np.arange(n) % 3
    expression = rng.lognormal(3, 0.3, size=(n, 8))
    for c in range(3):
        expression[y == c, 2 * c : 2 * c + 2] *= fold
    chromosomes = [c for c in table.lengths if c != "Y"]
    lengths = np.array([table.lengths[c] for c in chromosomes], dtype=float)
    rows = []
    for i in range(n):
        on = rng.choice(len(chromosomes), size=rng.poisson(breaks), p=lengths / lengths.sum())
        for j, c in enumerate(chromosomes):
            cuts = np.sort(rng.integers(1, table.lengths[c], size=int((on == j).sum())))
            for start, end in zip(np.r_[0, cuts], np.r_[cuts, table.lengths[c]], strict=True):
                rows.append((i, c, start, end, rng.normal(0, sd)))
        c, start, end = FOCAL[int(y[i])]
        rows.append((i, c, start, end, gain))
    seg = pd.DataFrame(rows, columns=["i", "c", "s", "e", "v"])
    values = band_means(seg["i"].to_numpy(), seg["c"].to_numpy(dtype=object), seg["s"].to_numpy(),
                        seg["e"].to_numpy(), seg["v"].to_numpy(), n, table)  # fmt: skip
    return y, np.log2(expression + 1), values[:, np.isfinite(values).all(axis=0)]


def pooled_f1(x: np.ndarray, y: np.ndarray, blocks: list[str], rule: str) -> float:
    """Pooled out-of-fold macro-F1 of logreg on ``x`` with ``rule`` (``none`` / ``equal``) block scaling."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from clinicmm.training.linear import CS, block_scale

    predicted = np.zeros(len(y), dtype=int)
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        scaler = StandardScaler().fit(x[train])
        a, b = scaler.transform(x[train]), scaler.transform(x[test])
        scale = block_scale(a, blocks) if rule == "equal" else None
        if scale is not None:
            a, b = a * scale, b * scale
        inner = StratifiedKFold(5, shuffle=True, random_state=0)
        model = LogisticRegressionCV(Cs=CS, cv=inner, scoring="neg_log_loss", max_iter=5000).fit(a, y[train])
        predicted[test] = model.predict(b)
    return float(f1_score(y, predicted, average="macro"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--fold", type=float, default=1.5, help="expression fold change of each class's genes")
    parser.add_argument("--gain", type=float, default=1.0, help="each class's focal copy-number gain (log2 ratio)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    results = []
    for seed in range(args.draws):
        y, expression, band_values = cohort(args.patients, seed, args.fold, args.gain)
        both = np.concatenate([expression, band_values], axis=1)
        blocks = ["expression"] * expression.shape[1] + ["bands"] * band_values.shape[1]
        results.append(
            {
                "expression alone": pooled_f1(expression, y, ["expression"] * 8, "none"),
                "bands alone": pooled_f1(band_values, y, ["bands"] * band_values.shape[1], "none"),
                **{f"both, {rule}": pooled_f1(both, y, blocks, rule) for rule in ("none", "equal")},
            }
        )
        print(
            f"draw {seed}: {band_values.shape[1]} bands, " + ", ".join(f"{k} {v:.3f}" for k, v in results[-1].items())
        )
    mean = pd.DataFrame(results).mean()
    print(
        f"\nmean of {args.draws} draws ({args.patients} patients, fold {args.fold}, gain {args.gain}), pooled macro-F1:"
    )
    print(mean.round(3).to_string())


if __name__ == "__main__":
    main()
