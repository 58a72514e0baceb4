"""How many CPU threads clinicmm's stages use (``runtime.threads`` in the workflow).

torch sizes its thread pool by the machine's cores, not by the CPUs the process may run on, so in a container
limited to fewer CPUs, or beside torchrun's other ranks, it oversubscribes: on a shared 2-core box encoding was
measured 6-26x slower than with one thread. The default here is the process's CPU affinity
(``os.sched_getaffinity``), divided among the torchrun ranks of this node. The same number goes to OpenMP / MKL
(``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``, for the libraries that read them later) and to torch; the runs
of a workflow carry it as the ``clinicmm.threads`` tag.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("clinicmm")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity; the CPU count where the platform has no affinity)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """The affinity's CPUs shared among the torchrun ranks of this node (at least 1)."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, available_cpus() // max(1, local_ranks))


def apply(threads: int | None) -> int:
    """Set torch's intra-op threads (and OpenMP / MKL's) to ``threads`` or :func:`default_threads`; returns it."""
    import torch

    n = int(threads) if threads else default_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
        log.debug("runtime: %d CPU thread(s)", n)
    return n
