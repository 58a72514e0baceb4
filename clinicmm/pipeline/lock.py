"""One process at a time per workdir: an exclusive ``flock`` on ``<workdir>/.lock``.

Two ``clinicmm`` processes writing the same workdir (and creating the same MLflow runs) would race: the second
one fails at once with a :class:`WorkdirBusy` naming the holder (pid, host, verb, start time, written as JSON into
the lock file) and what to do. The kernel releases a ``flock`` when its process dies, so a lock left by a process
that was killed (``kill -9``, a crash, a lost node) is simply taken over by the next run; the JSON of the dead
holder is only reported in the log.

The lock is re-entrant within a process (``clinicmm run`` takes it, then each stage takes it again). Under a
launcher (torchrun) rank 0 alone holds it: the other ranks work under rank 0's coordination.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from clinicmm.errors import StageError

log = logging.getLogger("clinicmm")

LOCK_NAME = ".lock"

_held: dict[Path, list] = {}  # resolved lock path -> [open file, depth]


class WorkdirBusy(StageError):
    """Another live clinicmm process holds the workdir's lock."""


def lock_path(work: Path) -> Path:
    return Path(work).resolve() / LOCK_NAME


def _holder(fh) -> dict:
    try:
        fh.seek(0)
        data = json.loads(fh.read() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _busy(path: Path, holder: dict) -> WorkdirBusy:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    what = f"`clinicmm {holder['verb']}`" if holder.get("verb") else "another clinicmm process"
    since = f" since {holder['started']}" if holder.get("started") else ""
    return WorkdirBusy(
        f"{path.parent}: workdir in use by {what} (pid {pid} on host {host}{since}; lock file {path}). "
        f"Wait for it to finish, or stop it (kill {pid} on {host}) and run again: a stopped process releases the "
        "lock by itself. To run both at once, give one of the workflows another workdir."
    )


def _acquire(path: Path, verb: str) -> None:
    entry = _held.get(path)
    if entry is not None:
        entry[1] += 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 -- held open for as long as the lock is held
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fh)
        fh.close()
        raise _busy(path, holder) from None
    except BaseException:
        fh.close()
        raise
    previous = _holder(fh)
    if previous.get("pid") and previous.get("pid") != os.getpid():
        log.info(
            "took over the workdir lock of pid %s on %s (%s), which is no longer running",
            previous.get("pid"),
            previous.get("host"),
            previous.get("verb", "?"),
        )
    me = {"pid": os.getpid(), "host": socket.gethostname(), "verb": verb, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps(me))
    fh.flush()
    _held[path] = [fh, 1]


def _release(path: Path) -> None:
    entry = _held.get(path)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    fh = _held.pop(path)[0]
    with contextlib.suppress(OSError):
        fh.seek(0)
        fh.truncate()  # an empty file: nobody holds it (the file stays, so that no two processes lock two inodes)
        fh.flush()
    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    fh.close()


def _is_zero() -> bool:
    """Rank 0 (or no launcher), without importing torch where it is not loaded yet (then no process group exists,
    and the launcher's environment is the whole answer)."""
    from clinicmm.pipeline import distributed

    if "torch.distributed" not in sys.modules:
        return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))
    return distributed.is_zero()


@contextlib.contextmanager
def workdir_lock(work: Path, verb: str = "run"):
    """Hold ``<work>/.lock`` for the block (re-entrant; a no-op on ranks other than 0); :class:`WorkdirBusy` if
    another live process holds it."""
    if not _is_zero():
        yield
        return
    path = lock_path(work)
    _acquire(path, verb)
    try:
        yield
    finally:
        _release(path)


def held(work: Path) -> bool:
    """True when this process holds ``work``'s lock."""
    return lock_path(work) in _held


def locked(verb: str):
    """Decorator of a stage function ``fn(wf, ...)``: it runs holding ``wf.work``'s lock."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(wf, *args, **kwargs):
            with workdir_lock(wf.work, verb):
                return fn(wf, *args, **kwargs)

        return inner

    return wrap
