"""How many CPU threads clinicmm's stages use (``runtime.threads`` in the workflow).

torch sizes its thread pool by the machine's cores, not by the CPUs the process may run on, so in a container
limited to fewer CPUs, or beside torchrun's other ranks, it oversubscribes: on a shared 2-core box encoding was
measured 6-26x slower than with one thread.

The default (``runtime.threads`` unset) is the CPUs that are free when a stage starts: the process's CPU affinity
(``os.sched_getaffinity``) less the CPUs' worth of work other processes are running on those CPUs, shared among
the torchrun ranks of this node, at least 1. The other work is measured, not guessed from a load average (which
lags by a minute and counts this process's own earlier stages): the affinity CPUs' busy time in ``/proc/stat``
over :data:`SAMPLE_SECONDS`, less this process's own CPU time over the same interval, rounded to whole CPUs. Why:
torch's intra-op threads meet at a barrier after every operation, so a thread whose core another process holds
stalls all of them; on the 2-core development box with two other busy processes, 2 threads encoded volumes at
0.84x the rate of 1 (``benchmarks/threads.py --busy 2``), while on an idle box 2 threads are the best count.
Where the counters cannot be read for every CPU of the affinity (no ``/proc/stat``, or an affinity naming CPUs it
does not list), the whole affinity is used, as before. The count is decided at the start of each stage, so a
long stage keeps it while the load changes; set ``runtime.threads`` on a server whose load is known. The same
number goes to OpenMP / MKL (``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``, for the libraries that read them later)
and to torch; the runs of a workflow carry it as the ``clinicmm.threads`` tag.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("clinicmm")

SAMPLE_SECONDS = 0.25  # how long the other processes' load is sampled before a stage picks its default


def available_cpus() -> int:
    """CPUs this process may run on (its affinity; the CPU count where the platform has no affinity)."""
    return len(_affinity())


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0)) or {0}
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks since boot summed over ``cpus`` from ``/proc/stat``; None if any is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = [line.split() for line in f if line.startswith("cpu") and line[3:4].isdigit()]
    except OSError:
        return None
    busy = total = 0
    seen = set()
    for fields in lines:
        cpu = int(fields[0][3:])
        if cpu in cpus:
            ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal (guest is in user)
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
            seen.add(cpu)
    return (busy, total) if seen == cpus else None


def other_load(cpus: set[int] | None = None, seconds: float = SAMPLE_SECONDS) -> float | None:
    """CPUs' worth of work that other processes ran on ``cpus`` (default: the affinity) over the next ``seconds``
    (this process's own CPU time subtracted); None where ``/proc/stat`` does not cover every one of them."""
    cpus = _affinity() if cpus is None else cpus
    before, own, t0 = _cpu_ticks(cpus), time.process_time(), time.monotonic()
    if before is None:
        return None
    time.sleep(seconds)
    after, own, elapsed = _cpu_ticks(cpus), time.process_time() - own, time.monotonic() - t0
    if after is None or after[1] <= before[1]:
        return None
    busy = (after[0] - before[0]) / (after[1] - before[1]) * len(cpus)  # CPUs' worth busy, this process included
    return max(0.0, busy - own / max(elapsed, 1e-9))


def default_threads(load: float | None = None) -> int:
    """The affinity's CPUs less the other processes' load on them (``load``, default measured now: see the module
    docstring), shared among the torchrun ranks of this node (at least 1)."""
    local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    cpus = _affinity()
    load = other_load(cpus) if load is None else load
    free = len(cpus) if load is None else len(cpus) - int(load + 0.5)
    return max(1, free // local_ranks)


def apply(threads: int | None) -> int:
    """Set torch's intra-op threads (and OpenMP / MKL's) to ``threads`` or :func:`default_threads`; returns it."""
    import torch

    n = int(threads) if threads else default_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.debug("runtime: %d CPU thread(s)%s", n, "" if threads else f" (default, of {available_cpus()} CPUs)")
    return n
