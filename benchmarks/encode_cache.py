"""How much the embedding cache saves: cold encode vs warm rerun vs rerun after one encoder setting changes.

Generates a small demo cohort in a temporary folder, ingests it, then, in one process and on the same cache
folder, times ``encode_cohort`` three times, each with a fresh ``Featurizer`` (as a new ``clinicmm encode`` run
would build one):

* cold: empty cache, every image series and note is encoded;
* warm: same encoders, same inputs -- everything should come from the cache;
* changed: the image window is changed, so the image fingerprint changes and only images re-encode.

The heavy libraries (monai, transformers) are imported before timing so the ratios compare encoding work, not
first-import cost. Plain prints, no assertions: this is a script, not a test.

    .venv/bin/python benchmarks/encode_cache.py [--patients 40]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clinicmm.config import EncodersSpec, WorkflowSpec, load_dataset
from clinicmm.demo.generator import generate_demo
from clinicmm.encode.featurizer import EncodedCohort, Featurizer, encode_cohort
from clinicmm.encode.genomics import fit_genomics
from clinicmm.ingest.cohort import ingest
from clinicmm.knowledge.graph import load_knowledge


def prepare(root: Path, patients: int):
    """Demo cohort written and ingested under ``root``; returns (workflow spec, cohort)."""
    t0 = time.perf_counter()
    dataset = generate_demo(root / "demo", patients=patients, seed=0, slices=16, size=64)
    cohort = ingest(load_dataset(dataset), root / "work" / "ingest")
    wf = WorkflowSpec(name="bench", dataset=dataset, workdir=root / "work")
    print(f"demo cohort: {patients} patients generated + ingested in {time.perf_counter() - t0:.1f} s")
    return wf, cohort


def warm_imports() -> None:
    """Import the encoders' libraries up front so the first timed phase does not pay for it."""
    import monai.networks.nets  # noqa: F401
    import transformers  # noqa: F401
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the 'Loading weights' bar; the encoders' own bars are off without a TTY


def phase(cohort, encoders: EncodersSpec, kg, pre, cache: Path, patients: list[str]) -> tuple[float, EncodedCohort]:
    """Seconds for one full encode (fresh Featurizer, so encoders are built as in a new run) and its result."""
    t0 = time.perf_counter()
    featurizer = Featurizer(encoders, kg, pre, cache_dir=cache)
    encoded = encode_cohort(cohort, featurizer, patients)
    return time.perf_counter() - t0, encoded


def counts(encoded: EncodedCohort) -> str:
    """'image 34/0, note 120/0' -- encoded/cached per cached modality."""
    parts = []
    for m in ("image", "note"):
        s = encoded.stats.get(m, {})
        parts.append(f"{m} {s.get('encoded', 0)}/{s.get('cached', 0)}")
    return ", ".join(parts)


def max_diff(a: EncodedCohort, b: EncodedCohort, modality: str) -> float:
    """Largest absolute difference between two runs' embeddings of one modality (NaN rows ignored)."""
    x, y = a.vectors[modality], b.vectors[modality]
    ok = ~np.isnan(x).any(1) & ~np.isnan(y).any(1)
    return float(np.abs(x[ok] - y[ok]).max()) if ok.any() else float("nan")


def report(n: int, runs: dict[str, tuple[float, EncodedCohort]]) -> None:
    cold = runs["cold"][0]
    print(f"\n{'run':<9}{'seconds':>9}{'patients/s':>12}{'cold/this':>11}   encoded/cached")
    for name, (sec, enc) in runs.items():
        print(f"{name:<9}{sec:>9.2f}{n / sec:>12.1f}{cold / sec:>10.1f}x   {counts(enc)}")
    print(f"\ncold/warm = {cold / runs['warm'][0]:.1f}x   cold/changed = {cold / runs['changed'][0]:.1f}x")
    c, w, ch = runs["cold"][1], runs["warm"][1], runs["changed"][1]
    print(f"warm vs cold max |diff|: image {max_diff(c, w, 'image'):.2e}, note {max_diff(c, w, 'note'):.2e}")
    print(
        f"changed vs cold max |diff|: image {max_diff(c, ch, 'image'):.2e} (new window), "
        f"note {max_diff(c, ch, 'note'):.2e} (cached)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40, help="demo cohort size (default 40)")
    args = parser.parse_args()
    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    print(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="clinicmm-bench-") as tmp:
        wf, cohort = prepare(Path(tmp), args.patients)
        kg, pre = load_knowledge(wf), fit_genomics(wf, cohort)
        patients = cohort.patients(labelled=False)
        cache = Path(tmp) / "cache"
        warm_imports()
        base = wf.encoders
        window = (base.image.window[0] + 40.0, base.image.window[1] - 40.0)
        changed = base.model_copy(update={"image": base.image.model_copy(update={"window": window})})
        runs = {
            "cold": phase(cohort, base, kg, pre, cache, patients),
            "warm": phase(cohort, base, kg, pre, cache, patients),
            "changed": phase(cohort, changed, kg, pre, cache, patients),
        }
        print(
            f"patients encoded: {len(patients)}; image window {tuple(base.image.window)} -> {window} "
            f"for 'changed'; omics recomputed each run (not cached)"
        )
        report(len(patients), runs)


if __name__ == "__main__":
    main()
