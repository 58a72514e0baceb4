"""Encode throughput by CPU thread count: ``runtime.threads``'s default against every count from 1 to the CPUs.

In one process, on the same inputs, times the two encoders' forward passes -- MiniLM on demo notes (the text
encoder of the encode stage) and MONAI's ResNet-10 on 32 x 64 x 64 volumes (the default image network, in batches
of the default ``batch_size`` as the encode stage runs it; ``--batch 1``: one volume at a time) -- at each thread
count, and prints items/s per count and the default's throughput as a ratio of the best count's (the issue's
target: >= 0.90). The counts take turns within each of ``--repeats`` rounds (best of the rounds per count), so a
change in the machine's load hits every count alike. The default is decided as a stage decides it
(:func:`clinicmm.pipeline.runtime.default_threads`: the affinity less the other processes' measured load), after
the ``--busy`` spinning processes have started; the load it measured and the load average are printed with it.
Run it on a quiet machine and again with the cores busy (``--busy 2`` starts that many spinning processes for the
duration), since the point is a shared server.

    .venv/bin/python benchmarks/threads.py [--notes 40] [--volumes 8] [--batch 4] [--repeats 3] [--busy 0]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=40)
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--batch", type=int, default=ImageEncoderSpec().batch_size, help="volumes per forward")
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
            for i in range(0, len(volumes), args.batch):
                net(volumes[i : i + args.batch])

    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        time.sleep(0.5 if spinners else 0)  # the spinners running before the default is decided
        load = runtime.other_load()
        default = runtime.default_threads(load)
        counts = sorted({1, default, *range(1, runtime.available_cpus() + 1)})
        best: dict[int, list[float]] = {n: [float("inf"), float("inf")] for n in counts}
        for _ in range(args.repeats):
            for n in counts:
                torch.set_num_threads(n)
                for i, fn in enumerate((notes, images)):
                    best[n][i] = min(best[n][i], _seconds(fn))
        loadavg = os.getloadavg()[0]
    finally:
        for p in spinners:
            p.terminate()
    rates = {n: (len(texts) / best[n][0], args.volumes / best[n][1]) for n in counts}
    for n in counts:
        print(f"threads {n}: notes {rates[n][0]:7.1f}/s   volumes {rates[n][1]:6.2f}/s")
    for i, what in enumerate(("notes", "volumes")):
        top = max(rates, key=lambda n: rates[n][i])
        ratio = rates[default][i] / rates[top][i]
        print(f"{what}: default ({default} threads) runs at {ratio:.2f} x the best count ({top}); target >= 0.90")
    shown = "unmeasured" if load is None else f"{load:.2f} CPUs"
    print(f"other processes' load when the default was decided: {shown}; load average at the end: {loadavg:.2f}")
    print(f"CPUs in this process's affinity: {runtime.available_cpus()}; busy processes alongside: {args.busy}")


if __name__ == "__main__":
    main()
