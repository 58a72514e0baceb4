"""Note-encoding throughput (notes/s) with and without the embedding cache, and ConText counts of the notes.

Generates a demo cohort in a temporary folder (small images: only its ``notes.csv`` is used), reads the notes
with :func:`clinicmm.ingest.notes.read_notes`, then, in one process, times the note path of the encode stage
(``Featurizer.notes``: chunked MiniLM embedding + concept linking) three ways, each with a fresh ``Featurizer``
as a new ``clinicmm encode`` would build:

* no cache: ``cache_dir=None``, every note encoded (the baseline);
* cold: an empty cache folder, every note encoded and written to the cache;
* warm: the same cache folder again, every note read from the cache.

transformers is imported, the MiniLM weights hashed and one note encoded before timing, so the ratios compare
encoding work, not first-use cost (each timed run still loads the model, as a new ``clinicmm encode`` does). It also counts, over the same notes, the concept mentions the matcher finds and how many
are asserted / negated / hypothetical / family (those three are not linked to the graph). Plain prints, no
assertions: this is a script, not a test.

    .venv/bin/python benchmarks/notes_encode.py [--patients 60] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from clinicmm.config import EncodersSpec, NotesSpec
from clinicmm.demo.generator import generate_demo
from clinicmm.encode.featurizer import Featurizer
from clinicmm.ingest.notes import read_notes
from clinicmm.knowledge.concepts import ConceptMatcher
from clinicmm.knowledge.graph import KnowledgeGraph


def demo_notes(root: Path, patients: int) -> list[list[str]]:
    """Each demo patient's usable note texts."""
    dataset = generate_demo(root / "demo", patients=patients, seed=0, slices=4, size=16)
    path = dataset.parent / "notes.csv"
    index = read_notes(
        NotesSpec(path=path, note_id_column="note_id", note_type_column="note_type", date_column="note_date"), path
    )
    ok = index[index["status"] == "ok"]
    return [group["text"].tolist() for _, group in ok.groupby("patient_id", sort=True)]


def timed(label: str, texts: list[list[str]], kg: KnowledgeGraph, cache: Path | None) -> np.ndarray:
    featurizer = Featurizer(EncodersSpec(), kg, cache_dir=cache)
    n = sum(len(t) for t in texts)
    t0 = time.perf_counter()
    vectors, _, info = featurizer.notes(texts)
    seconds = time.perf_counter() - t0
    s = info["stats"]
    print(f"{label:>9}: {seconds:7.2f} s  {n / seconds:8.1f} notes/s  (encoded {s['encoded']}, cached {s['cached']})")
    return vectors, seconds


def context_counts(texts: list[list[str]], kg: KnowledgeGraph) -> None:
    matcher = ConceptMatcher(kg.concepts())
    counts: Counter = Counter()
    for note in (t for ts in texts for t in ts):
        for m in matcher.find(note):
            counts[
                "negated" if m.negated else "hypothetical" if m.hypothetical else "family" if m.family else "asserted"
            ] += 1
    kinds = ("asserted", "negated", "hypothetical", "family")
    print(
        f"concept mentions: {sum(counts.values())} = "
        + ", ".join(f"{k} {counts[k]}" for k in kinds)
        + " (only asserted ones link the note to the graph)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    kg = KnowledgeGraph.default()
    with tempfile.TemporaryDirectory() as tmp:
        texts = demo_notes(Path(tmp), args.patients)
        n = sum(len(t) for t in texts)
        lengths = [len(t) for ts in texts for t in ts]
        print(
            f"{len(texts)} patients, {n} notes (median {int(np.median(lengths))} characters), "
            f"torch threads {torch.get_num_threads()}"
        )
        warm_up = Featurizer(EncodersSpec(), kg).text_encoder  # import transformers, hash and page in the weights,
        warm_up.fingerprint()  # and run one forward pass, so the first timed run pays no one-off cost
        warm_up.encode(["warm-up note"], progress=False)
        base, t_none = timed("no cache", texts, kg, None)
        cold, t_cold = timed("cold", texts, kg, Path(tmp) / "cache")
        warm, t_warm = timed("warm", texts, kg, Path(tmp) / "cache")
        print(
            f"no cache / warm: {t_none / t_warm:.0f}x   cold / no cache: {t_cold / t_none:.2f}x   "
            f"max |warm - no cache| {float(np.nanmax(np.abs(warm - base))):.1e}"
        )
        context_counts(texts, kg)


if __name__ == "__main__":
    main()
