"""Probe -> gene averaging (``clinicmm.ingest.feature_maps.map_features``, a methylation layer's probes through its
feature map) against the former dense product, in one process on the same inputs.

The former built a dense (probes x genes) membership matrix: for a whole 450k array (~365k mapped probes, ~20k
genes) that is ~58 GB of float64, so a real manifest could not be used. Now the matrix is sparse. The sizes here
are kept small enough for the former to run (``--probes``, default 20,000 over ``--genes`` 5,000, 200 patients, 5%
of the values missing); the script prints each one's time and peak traced memory, the ratios, and the largest
difference between the two results, then the sparse one alone at a 450k array's size. Plain prints, no assertions.

    .venv/bin/python benchmarks/probe_map.py [--probes 20000 --genes 5000]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
import pandas as pd

from clinicmm.ingest.feature_maps import map_features


def former(matrix: pd.DataFrame, table: dict[str, list[str]]) -> tuple[pd.DataFrame, int]:
    """The averaging before: a dense (probes x genes) membership matrix."""
    mapped = [c for c in matrix.columns if c in table]
    genes = sorted({g for c in mapped for g in table[c]})
    index = {g: j for j, g in enumerate(genes)}
    member = np.zeros((len(mapped), len(genes)))
    for i, c in enumerate(mapped):
        member[i, [index[g] for g in table[c]]] = 1.0
    values = matrix[mapped].to_numpy(dtype=float)
    seen = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.nan_to_num(values) @ member / (seen.astype(float) @ member)
    by_gene = pd.DataFrame(means, index=matrix.index, columns=pd.Index(genes, dtype=str))
    rest = matrix[[c for c in matrix.columns if c not in table and c not in index]]
    return pd.concat([by_gene, rest], axis=1), len(mapped)


def cohort(probes: int, genes: int, patients: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    values = rng.uniform(size=(patients, probes))
    values[rng.uniform(size=values.shape) < 0.05] = np.nan
    names = [f"cg{i:08d}" for i in range(probes)]
    symbols = [f"G{j}" for j in range(genes)]
    table = {}  # 3 of 4 probes map, a tenth of those to two genes (as a manifest's shared promoters)
    for i in np.flatnonzero(rng.uniform(size=probes) < 0.75):
        table[names[i]] = [symbols[j] for j in dict.fromkeys(rng.integers(genes, size=1 + (rng.uniform() < 0.1)))]
    return pd.DataFrame(values, columns=names), table


def measure(fn, *args) -> tuple[float, float, pd.DataFrame]:
    tracemalloc.start()
    start = time.perf_counter()
    out, _ = fn(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=20_000)
    parser.add_argument("--genes", type=int, default=5_000)
    parser.add_argument("--patients", type=int, default=200)
    args = parser.parse_args()
    matrix, table = cohort(args.probes, args.genes, args.patients)
    old_s, old_mb, old = measure(former, matrix, table)
    new_s, new_mb, new = measure(map_features, matrix, table)
    diff = np.nanmax(np.abs(old[new.columns].to_numpy() - new.to_numpy()))
    print(f"{args.probes:,} probes, {len(table):,} mapped over {args.genes:,} genes, {args.patients} patients")
    print(f"  former (dense)  {old_s:7.2f} s  peak {old_mb:8.0f} MiB")
    print(f"  now (sparse)    {new_s:7.2f} s  peak {new_mb:8.0f} MiB")
    print(f"  time {old_s / new_s:.1f}x, memory {old_mb / new_mb:.1f}x less, largest difference {diff:.1e}")
    matrix, table = cohort(485_000, 20_000, 50, seed=1)
    big_s, big_mb, _ = measure(map_features, matrix, table)
    dense_gb = len(table) * 20_000 * 8 / 2**30
    print(f"450k-array size (485,000 probes, {len(table):,} mapped, 20,000 genes, 50 patients): sparse {big_s:.1f} s, "
          f"peak {big_mb:,.0f} MiB; the former's membership matrix alone would be {dense_gb:,.0f} GiB")  # fmt: skip


if __name__ == "__main__":
    main()
