"""What imputing unmeasured omics values costs: a patient measured on half the model's panel against one measured
on all of it, in the same process.

A preprocessor is fitted on ``--patients`` synthetic training patients x ``--genes`` genes (the default
``impute_components``, 32); then one patient's z-scores are computed ``--repeats`` times with every gene measured
(nothing to impute: the baseline) and with every other gene missing (one conditional-mean solve), and a batch of
64 patients each missing its own random 10% (64 solves). Prints the times, their ratio to the baseline, the fit
time and the size of the fitted description (the imputer's loadings travel in the model bundle). Plain prints.

    .venv/bin/python benchmarks/impute.py [--patients 400] [--genes 5000] [--repeats 50]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd


def per_call(fn, repeats: int) -> float:
    fn()  # warm: the layer map is worked out on the first call
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--genes", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    from clinicmm.encode.genomics import GenomicsPreprocessor

    rng = np.random.default_rng(0)
    genes = [f"G{j}" for j in range(args.genes)]
    train = pd.DataFrame(rng.normal(size=(args.patients, args.genes)), columns=genes)
    train.index = [f"P{i}" for i in range(args.patients)]
    start = time.perf_counter()
    pre = GenomicsPreprocessor("log").fit(train, None)
    fit = time.perf_counter() - start
    full = train.iloc[:1]
    half = full.copy()
    half.iloc[:, ::2] = np.nan
    batch = train.iloc[:64].mask(rng.random((64, args.genes)) < 0.1)
    base = per_call(lambda: pre.zscores(full, ["P0"]), args.repeats)
    one = per_call(lambda: pre.zscores(half, ["P0"]), args.repeats)
    many = per_call(lambda: pre.zscores(batch, list(batch.index)), max(1, args.repeats // 10))
    size = len(json.dumps(pre.to_dict())) / 1e6
    print(f"{args.patients} training patients x {args.genes} genes, {pre.impute_components} components")
    print(f"fit (z-scores and probabilistic PCA): {fit:.2f} s; fitted description {size:.2f} MB of JSON")
    print(f"one patient, whole panel (baseline): {base * 1e3:.2f} ms")
    print(f"one patient, half the panel:         {one * 1e3:.2f} ms ({one / base:.2f}x the baseline)")
    print(f"64 patients, 10% missing each:       {many * 1e3:.2f} ms ({many / base:.2f}x one whole-panel patient)")


if __name__ == "__main__":
    main()
