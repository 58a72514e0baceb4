"""On-disk embedding cache keyed by the encoder's fingerprint and the content of its input.

An entry's key is ``sha256(encoder fingerprint + input digest)``, so a changed encoder (network, window,
weights, model folder, max_length ...) or a changed input (file bytes, note text) misses the cache, and an
unchanged rerun encodes nothing. Entries are written atomically (temporary file + rename): a run killed while
writing leaves no half-written entry behind.

Misses are encoded ``chunk`` inputs at a time (the encoder's batch size when the featurizer calls it) and each
chunk's vectors are committed to the cache before the next chunk starts, so an encode that is killed or crashes
part-way keeps everything it finished: the rerun encodes only what is still missing (at most one chunk is lost).
A tqdm bar shows the inputs encoded so far, the rate, and how many came from the cache.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clinicmm.files import atomic_write_bytes, digest_bytes

log = logging.getLogger("clinicmm")

COMMIT_EVERY = 8
"""Default number of inputs encoded between two commits to the cache (callers pass their encoder's batch size)."""

LOG_EVERY_S = 30.0
"""Without a terminal for the progress bar, the encode logs its counts this often (seconds)."""

Encode = Callable[[list[int]], tuple[np.ndarray, dict[int, str]]]
"""``encode(positions) -> (vectors for those positions, {index in positions: reason} for failures)``."""


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # input key -> reason


class EmbeddingCache:
    """A folder of ``.npy`` vectors, one per (encoder fingerprint, input digest)."""

    def __init__(self, root: Path, fingerprint: str):
        self.root = Path(root) / fingerprint[:16]
        self.fingerprint = fingerprint

    def _path(self, input_digest: str) -> Path:
        return self.root / f"{digest_bytes(self.fingerprint, input_digest)}.npy"

    def get(self, input_digest: str) -> np.ndarray | None:
        """The cached vector, or None when absent or unreadable (an unreadable entry is re-encoded, then replaced)."""
        path = self._path(input_digest)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            log.warning("embedding cache entry %s is unreadable (%s); it will be re-encoded", path, type(exc).__name__)
            return None

    def put(self, input_digest: str, vector: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(self._path(input_digest), buf.getvalue())

    def get_or_encode(
        self,
        digests: Sequence[str],
        encode: Encode,
        dim: int,
        chunk: int = COMMIT_EVERY,
        desc: str = "encoding",
        unit: str = "input",
        progress: bool = True,
    ) -> tuple[np.ndarray, CacheStats]:
        """Vectors for every digest; ``encode(positions)`` is called for the misses only, ``chunk`` at a time.

        ``encode`` returns (vectors for those positions, {position in its list: reason} for failures); failed rows
        come back as NaN, are counted in ``stats.failed`` and are not cached (a rerun tries them again). Each
        chunk's vectors are in the cache before the next chunk is encoded, so if ``encode`` raises (or the process
        is killed) the finished chunks are kept and a rerun encodes only the rest.
        """
        out = np.full((len(digests), dim), np.nan, dtype=np.float32)
        stats = CacheStats()
        missing: list[int] = []
        for i, d in enumerate(digests):
            hit = self.get(d)
            if hit is not None and hit.shape == (dim,):
                out[i] = hit
                stats.hits += 1
            else:
                missing.append(i)

        def commit(positions: list[int], vectors: np.ndarray, failures: dict[int, str]) -> None:
            for j, i in enumerate(positions):
                if j in failures:
                    stats.failed[digests[i]] = failures[j]
                    continue
                out[i] = vectors[j]
                self.put(digests[i], vectors[j])
                stats.misses += 1

        encode_in_chunks(missing, encode, commit, chunk, desc, unit, progress, cached=stats.hits)
        return out, stats


def encode_in_chunks(
    positions: Sequence[int],
    encode: Encode,
    commit: Callable[[list[int], np.ndarray, dict[int, str]], None],
    chunk: int = COMMIT_EVERY,
    desc: str = "encoding",
    unit: str = "input",
    progress: bool = True,
    cached: int = 0,
) -> None:
    """``encode`` ``positions`` ``chunk`` at a time, handing each chunk's result to ``commit`` before the next.

    A tqdm bar on stderr (shown on a terminal, ``progress=False`` hides it) counts the inputs encoded, their rate
    and the ``cached`` ones not encoded. Without a terminal (a batch job, a redirected log) the same counts go to
    the log every ``LOG_EVERY_S`` seconds instead, and one log line sums them up at the end. Only counts are shown
    or logged, never an input's name or content.
    """
    from tqdm.auto import tqdm

    chunk = max(1, int(chunk))
    todo = list(positions)
    failed = done = 0
    started = last_log = time.perf_counter()
    with tqdm(
        total=len(todo),
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=None if progress else True,
        dynamic_ncols=True,
    ) as bar:
        bar.set_postfix(cached=cached, failed=0, refresh=False)
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            vectors, failures = encode(part)
            commit(part, np.asarray(vectors, dtype=np.float32), failures)
            failed += len(failures)
            bar.set_postfix(cached=cached, failed=failed, refresh=False)
            bar.update(len(part))
            done += len(part)
            now = time.perf_counter()
            if progress and bar.disable and now - last_log >= LOG_EVERY_S and done < len(todo):
                last_log, rate = now, done / max(now - started, 1e-9)
                log.info(
                    "%s: %d/%d %s (%.2f/s, about %.0f s left), %d from the cache, %d failed",
                    desc, done, len(todo), unit, rate, (len(todo) - done) / max(rate, 1e-9), cached, failed,
                )  # fmt: skip
    if todo:
        seconds = time.perf_counter() - started
        log.log(
            logging.INFO if len(todo) > chunk else logging.DEBUG,  # one batch (a prediction): no line
            "%s: %d encoded in %.1f s (%.2f %s/s), %d from the cache, %d failed",
            desc, len(todo) - failed, seconds, len(todo) / max(seconds, 1e-9), unit, cached, failed,
        )  # fmt: skip
