"""How much of an image encode a real kill costs: SIGKILL at ~90% of the series, then rerun on the same cache.

Generates a small demo cohort (real DICOM series) in a temporary folder and ingests it, then encodes its image
series in child processes (``python benchmarks/encode_resume.py --child ...``, a fresh ``Featurizer`` each, as a
new ``clinicmm encode`` would build; resnet10 at ``SPATIAL_SIZE``, ``--batch-size`` series per forward pass):

1. clean: an empty cache, encoded to the end (the reference embeddings and the encode time);
2. killed: another empty cache; the child reports each forward pass before it runs it, and is sent SIGKILL as
   soon as the pass that takes it to ``--at`` (0.9) of the series starts, so that pass is lost;
3. rerun: the same cache as 2, encoded to the end: it prints how many series it had to encode again, and the
   largest difference between its embeddings and the clean run's.

With ``--baseline`` the killed + rerun pair is repeated with every embedding committed only at the end of the
encode (how the cache worked before issue 15), for comparison. Plain prints, no assertions: a script, not a test.

    .venv/bin/python benchmarks/encode_resume.py [--patients 100] [--at 0.9] [--batch-size 4] [--baseline]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

START, FORWARD = "ENCODE-START", "FORWARD"
SLICES, SIZE = 8, 32  # the demo's DICOM series: 8 slices of 32 x 32
SPATIAL_SIZE = (16, 32, 32)  # what resnet10 sees; small, so that ~100 series encode in well under a minute


# ------------------------------------------------------------------------------------------------ child


def child(ingest_dir: Path, cache: Path, vectors_out: Path | None, commit_at_end: bool, batch_size: int) -> None:
    """Encode every image series of the ingested cohort into ``cache``; print START, then the stats as JSON."""
    import torch

    from clinicmm.config import EncodersSpec, ImageEncoderSpec
    from clinicmm.encode import cache as cache_module
    from clinicmm.encode.featurizer import Featurizer
    from clinicmm.ingest.cohort import Cohort, patient_inputs
    from clinicmm.knowledge.graph import KnowledgeGraph

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if commit_at_end:  # the behaviour before issue 15: one encode call, every entry written after it
        chunked = cache_module.encode_in_chunks

        def at_end(positions, encode, commit, chunk=8, *args, **kwargs):
            return chunked(positions, encode, commit, max(1, len(positions)), *args, **kwargs)

        cache_module.encode_in_chunks = at_end
    cohort = Cohort.load(ingest_dir)
    patients = cohort.patients(labelled=False)
    inputs = patient_inputs(cohort, patients)
    spec = EncodersSpec(image=ImageEncoderSpec(spatial_size=SPATIAL_SIZE, batch_size=batch_size))
    featurizer = Featurizer(spec, KnowledgeGraph.default(), cache_dir=cache, progress=False)
    enc = featurizer.image_encoder
    enc.fingerprint()  # build the network and hash the weights before the clock starts
    forward = enc._forward

    def reported(batch):  # tell the parent how many series this forward pass holds, before running it
        print(FORWARD, len(batch), flush=True)
        return forward(batch)

    enc._forward = reported
    print(START, flush=True)
    t0 = time.perf_counter()
    vectors, _, info = featurizer.images(inputs["series"], inputs["body_parts"])
    seconds = time.perf_counter() - t0
    if vectors_out is not None:
        np.save(vectors_out, vectors)
    print(json.dumps({"seconds": seconds, **info["stats"]}), flush=True)


# ----------------------------------------------------------------------------------------------- parent


def prepare(root: Path, patients: int) -> tuple[Path, int]:
    """Demo cohort written and ingested under ``root``; returns (ingest folder, number of image series)."""
    from clinicmm.config import load_dataset
    from clinicmm.demo.generator import generate_demo
    from clinicmm.ingest.cohort import ingest, patient_inputs

    t0 = time.perf_counter()
    dataset = generate_demo(root / "demo", patients=patients, seed=0, slices=SLICES, size=SIZE)
    cohort = ingest(load_dataset(dataset), root / "ingest")
    n = sum(s is not None for s in patient_inputs(cohort, cohort.patients(labelled=False))["series"])
    print(
        f"demo cohort: {patients} patients, {n} image series, generated + ingested in {time.perf_counter() - t0:.1f} s"
    )
    return root / "ingest", n


def spawn(
    ingest_dir: Path, cache: Path, batch: int, vectors: Path | None = None, at_end: bool = False
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(ingest_dir),
        str(cache),
        "--batch-size",
        str(batch),
    ]
    cmd += ["--vectors", str(vectors)] if vectors else []
    cmd += ["--commit-at-end"] if at_end else []
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def wait_start(proc: subprocess.Popen) -> float:
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.strip() == START:
            return time.perf_counter()
    raise SystemExit(f"the encode child exited (code {proc.wait()}) before it started encoding")


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the encode child failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def entries(cache: Path) -> int:
    return sum(1 for _ in cache.rglob("*.npy"))


def kill_and_rerun(ingest_dir: Path, cache: Path, batch: int, n: int, at: float, at_end: bool, label: str, clean: Path):
    proc = spawn(ingest_dir, cache, batch, at_end=at_end)
    wait_start(proc)
    done, target = 0, math.ceil(at * n)
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith(FORWARD):
            done += int(line.split()[1])
            if done >= target:  # this pass takes the encode to `at`: kill it while it runs
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        print(f"{label}: the encode finished before the kill")
        return
    kept, tmp = entries(cache), sum(1 for _ in cache.rglob("*.tmp"))
    vectors = cache.parent / f"{cache.name}.npy"
    rerun = finish(spawn(ingest_dir, cache, batch, vectors, at_end))
    diff = np.nanmax(np.abs(np.load(vectors) - np.load(clean)))
    print(
        f"{label:<22}killed in the pass reaching {done}/{n}: {kept:>3} committed ({tmp} stray .tmp); "
        f"rerun encoded {rerun['encoded']:>4} ({rerun['encoded'] / n:6.1%} of the series), "
        f"{rerun['cached']} cached, {rerun['seconds']:.1f} s; max |diff| vs clean {diff:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100, help="demo cohort size (default 100)")
    parser.add_argument("--at", type=float, default=0.9, help="kill in the pass that reaches this share of the series")
    parser.add_argument("--batch-size", type=int, default=4, help="encoders.image.batch_size (default 4, as shipped)")
    parser.add_argument("--baseline", action="store_true", help="also kill + rerun with commit-at-end")
    parser.add_argument("--child", nargs=2, metavar=("INGEST", "CACHE"), help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--commit-at-end", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("clinicmm").setLevel(logging.WARNING)
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.vectors, args.commit_at_end, args.batch_size)
        return
    with tempfile.TemporaryDirectory(prefix="clinicmm-bench-") as tmp:
        root = Path(tmp)
        ingest_dir, n = prepare(root, args.patients)
        clean = root / "clean.npy"
        proc = spawn(ingest_dir, root / "clean", args.batch_size, clean)
        wait_start(proc)
        stats = finish(proc)
        total = stats["seconds"]
        print(f"clean encode: {stats['encoded']} series in {total:.1f} s ({stats['encoded'] / total:.2f} series/s)")
        kill_and_rerun(ingest_dir, root / "killed", args.batch_size, n, args.at, False, "commit per batch", clean)
        if args.baseline:
            kill_and_rerun(
                ingest_dir,
                root / "killed_at_end",
                args.batch_size,
                n,
                args.at,
                True,
                "commit at end (old)",
                clean,
            )


if __name__ == "__main__":
    main()
