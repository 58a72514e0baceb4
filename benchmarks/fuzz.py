"""A longer fuzzing campaign of ingest than the test suite's: N mutated cohorts, each run with a timeout.

The cases are drawn by hypothesis from the strategies of ``tests/ingest/test_fuzz_ingest.py`` (mutated DICOM
bytes and headers, notes and labels tables, pipes, link loops, links out of the dataset, odd file names) and run
one at a time in a worker subprocess that ``run_case`` checks every property in (no exception but clinicmm's own,
nothing written outside the work folder, every input ingested or recorded with a reason). A case that does not
answer within ``--timeout`` seconds is a hang: the worker is killed and a fresh one takes the next case.

Prints, at the end: cases / clean (ingested; bad inputs recorded and skipped) / clear errors (a ClinicmmError,
e.g. no usable patient left) / crashes (any other exception, or a property that failed) / hangs, and the first
few failing cases as JSON (rerun one with ``--case '<json>'``). Plain prints, no assertions: a script, not a test.

    .venv/bin/python benchmarks/fuzz.py [--cases 200] [--seed 0] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = [REPO / "tests" / "ingest", REPO / "tests" / "helpers"]


def _import_cases():
    sys.path[:0] = [str(p) for p in TESTS]
    import test_fuzz_ingest

    return test_fuzz_ingest


def draw_cases(n: int, seed: int) -> list[dict]:
    """``n`` cases from the test's strategy (JSON-able: bytes travel as hex)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hseed

    fuzz = _import_cases()
    cases: list[dict] = []

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=fuzz.CASES)
    def collect(case):
        cases.append(json.loads(json.dumps(case)))

    collect()
    return cases[:n]


def worker() -> None:
    """Read one case per line from stdin, run it, answer one JSON line: {outcome, detail}."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    fuzz = _import_cases()
    for line in sys.stdin:
        case = json.loads(line)
        with tempfile.TemporaryDirectory(prefix="clinicmm-fuzz-") as tmp:
            try:
                outcome = fuzz.run_case(case, Path(tmp))
                answer = {"outcome": "clean" if outcome == "ok" else "clear_error", "detail": outcome}
            except AssertionError as exc:
                answer = {"outcome": "crash", "detail": f"property failed: {exc}"}
            except Exception as exc:  # noqa: BLE001 -- the point: any other exception is a crash
                answer = {"outcome": "crash", "detail": "".join(traceback.format_exception_only(exc)).strip()}
        print(json.dumps(answer), flush=True)


class Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
        )

    def run(self, case: dict, timeout: float) -> dict | None:
        """The worker's answer, or None when it gave none within ``timeout`` (a hang: it is killed)."""
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            return None
        return json.loads(line)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=200, help="how many cases to draw and run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a case may take before it is a hang")
    parser.add_argument("--case", help="run this one case (JSON, as printed for a failure)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    if not hasattr(os, "mkfifo"):
        sys.exit("needs a POSIX system (FIFOs, symlinks)")
    cases = [json.loads(args.case)] if args.case else draw_cases(args.cases, args.seed)
    counts: Counter = Counter()
    failures: list[tuple[str, dict, str]] = []
    start = time.perf_counter()
    current = Worker()
    for i, case in enumerate(cases, start=1):
        answer = current.run(case, args.timeout)
        if answer is None:
            answer = {"outcome": "hang", "detail": f"no answer within {args.timeout:g} s"}
            current = Worker()
        counts[answer["outcome"]] += 1
        if answer["outcome"] in ("crash", "hang"):
            failures.append((answer["outcome"], case, answer["detail"]))
        if i % 25 == 0:
            print(f"  {i}/{len(cases)} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    current.close()
    print(f"cases          {len(cases)}")
    print(f"clean skips    {counts['clean']}   (ingested; every bad input recorded and skipped)")
    print(f"clear errors   {counts['clear_error']}   (ClinicmmError naming the problem)")
    print(f"crashes        {counts['crash']}")
    print(f"hangs          {counts['hang']}")
    print(f"time           {time.perf_counter() - start:.0f} s")
    for outcome, case, detail in failures[:5]:
        print(f"\n{outcome}: {detail}\n  --case '{json.dumps(case)}'")


if __name__ == "__main__":
    main()
