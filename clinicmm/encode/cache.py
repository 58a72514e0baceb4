"""On-disk embedding cache keyed by the encoder's fingerprint and the content of its input.

An entry's key is ``sha256(encoder fingerprint + input digest)``, so a changed encoder (network, window,
weights, model folder, max_length ...) or a changed input (file bytes, note text) misses the cache, and an
unchanged rerun encodes nothing. Entries are written atomically (temporary file + rename): a run killed while
writing leaves no half-written entry behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clinicmm.files import atomic_write_bytes, digest_bytes


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
        path = self._path(input_digest)
        return np.load(path, allow_pickle=False) if path.is_file() else None

    def put(self, input_digest: str, vector: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(self._path(input_digest), buf.getvalue())

    def get_or_encode(
        self,
        digests: Sequence[str],
        encode: Callable[[list[int]], tuple[np.ndarray, dict[int, str]]],
        dim: int,
    ) -> tuple[np.ndarray, CacheStats]:
        """Vectors for every digest; ``encode(positions)`` is called once, for the misses only.

        ``encode`` returns (vectors for those positions, {position in its list: reason} for failures);
        failed rows come back as NaN and are counted in ``stats.failed``.
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
        if missing:
            vectors, failures = encode(missing)
            for j, i in enumerate(missing):
                if j in failures:
                    stats.failed[digests[i]] = failures[j]
                    continue
                out[i] = vectors[j]
                self.put(digests[i], vectors[j])
                stats.misses += 1
        return out, stats
