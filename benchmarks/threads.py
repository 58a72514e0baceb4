"""Encode throughput by CPU thread count: ``runtime.threads``'s default against every count from 1 to the CPUs.

In one process, on the same inputs, times the two encoders' forward passes — MiniLM on demo notes (the text
encoder of the encode stage) and MONAI's ResNet-10 on 32 x 64 x 64 volumes (the default image network) — at
each thread count, best of ``--repeats``, and prints items/s per count and the default's throughput as a ratio of
the best count's (the issue's target: >= 0.90). Run it on a quiet machine and again with the cores busy (e.g.
``--busy 2`` starts that many spinning processes for the duration), since the point is a shared server.

    .venv/bin/python benchmarks/threads.py [--notes 40] [--volumes 8] [--repeats 3] [--busy 0]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import torch

from clinicmm.config import ImageEncoderSpec, TextEncoderSpec
from clinicmm.encode.imaging.encoder import build_network
from clinicmm.encode.text.encoder import TextEncoder
from clinicmm.pipeline import runtime


def _spin() -> None:
    while True:
        pass


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=40)
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=0, help="spinning processes to run alongside (a busy server)")
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from notes_encode import demo_notes

    with tempfile.TemporaryDirectory() as tmp:
        texts = [t for ts in demo_notes(Path(tmp), max(6, args.notes // 2)) for t in ts][: args.notes]
    text = TextEncoder(TextEncoderSpec())
    net = build_network(ImageEncoderSpec()).eval()
    volumes = torch.randn(args.volumes, 1, 32, 64, 64)
    text.encode(texts[:2], progress=False)  # load once, outside the timing

    def notes() -> None:
        text.encode(texts, progress=False)

    def images() -> None:
        with torch.inference_mode():
            for v in volumes:
                net(v[None])

    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        default = runtime.default_threads()
        counts = sorted({1, default, *range(1, runtime.available_cpus() + 1)})
        rates: dict[int, tuple[float, float]] = {}
        for n in counts:
            torch.set_num_threads(n)
            rates[n] = (len(texts) / _best(notes, args.repeats), args.volumes / _best(images, args.repeats))
            print(f"threads {n}: notes {rates[n][0]:7.1f}/s   volumes {rates[n][1]:6.2f}/s")
    finally:
        for p in spinners:
            p.terminate()
    for i, what in enumerate(("notes", "volumes")):
        best = max(rates, key=lambda n: rates[n][i])
        ratio = rates[default][i] / rates[best][i]
        print(f"{what}: default ({default} threads) runs at {ratio:.2f} x the best count ({best}); target >= 0.90")
    print(f"CPUs in this process's affinity: {runtime.available_cpus()}; busy processes alongside: {args.busy}")


if __name__ == "__main__":
    main()
