"""Encoding sharded by rank: rank ``r`` of ``W`` encodes the patients at positions ``r, r + W, r + 2W ...`` of the
cohort's (deterministic) patient list and writes its shard under ``encode/shards/W-r/``.

The shard's ``shard.json`` is written last and atomically, so a rank that died leaves no record and its shard is
encoded again on the rerun, while finished shards are read back. Rank 0 then checks that every patient was encoded
exactly once and merges the shards in cohort order. The process group itself is the pipeline's
(:mod:`clinicmm.pipeline.distributed`), which hands in the rank, the world size and its barrier.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from clinicmm.encode.featurizer import EncodedCohort, encode_cohort
from clinicmm.errors import StageError
from clinicmm.files import atomic_write_bytes

log = logging.getLogger("clinicmm")
SHARD_RECORD = "shard.json"


def shard(patients: list[str], r: int, world: int) -> list[str]:
    """The patients rank ``r`` of ``world`` encodes: every ``world``-th from position ``r`` (balanced, fixed)."""
    if not 0 <= r < world:
        raise ValueError(f"Expected 0 <= rank < world size (got rank {r}, world size {world})")
    return patients[r::world]


def shard_dir(folder: Path, r: int, world: int) -> Path:
    return Path(folder) / f"{world}-{r}"


def _finished(folder: Path, key: str, patients: list[str]) -> bool:
    path = folder / SHARD_RECORD
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return False
    return record.get("key") == key and record.get("patients") == len(patients)


def encode_shard(
    cohort, featurizer, patients: list[str], folder: Path, key: str, r: int, world: int, naming=None
):  # fmt: skip
    """Encode rank ``r``'s shard (or read it back when already finished with the same ``key``). ``naming``:
    ``(id -> pseudonym, {pseudonym: id})`` (:func:`clinicmm.pseudo.naming`) to write patients by pseudonym."""
    pseudonymise, ids = naming or (None, None)
    mine = shard(patients, r, world)
    out = shard_dir(folder, r, world)
    if _finished(out, key, mine):
        log.info("encode: shard %d of %d already finished, read back", r, world)
        return EncodedCohort.load(out, ids)
    (out / SHARD_RECORD).unlink(missing_ok=True)
    encoded = encode_cohort(cohort, featurizer, mine)
    encoded.save(out, pseudonymise)
    record = {"key": key, "rank": r, "world_size": world, "patients": len(mine), "digest": encoded.content_digest()}
    atomic_write_bytes(out / SHARD_RECORD, json.dumps(record).encode())  # last: the shard counts as finished
    return encoded


def merge_shards(folder: Path, patients: list[str], key: str, world: int, naming=None):
    """Rank 0: read every shard, check each patient was encoded exactly once, merge in ``patients`` order."""
    ids = naming[1] if naming else None
    parts = []
    for r in range(world):
        out = shard_dir(folder, r, world)
        if not _finished(out, key, shard(patients, r, world)):
            raise StageError(
                f"{out}: encode shard {r} of {world} is missing or unfinished (rank {r} failed?). "
                "Rerun the same command: finished shards are read back, this one is encoded again."
            )
        parts.append(EncodedCohort.load(out, ids))
    check_exactly_once(patients, [p.patients for p in parts])
    return _concat(parts, patients)


def check_exactly_once(patients: list[str], shards: list[list[str]]) -> None:
    """StageError unless the shards together hold every patient of ``patients`` once and nobody else."""
    seen: dict[str, int] = {}
    for ids in shards:
        for p in ids:
            seen[p] = seen.get(p, 0) + 1
    twice = sorted(p for p, n in seen.items() if n > 1)
    missing = sorted(set(patients) - set(seen))
    extra = sorted(set(seen) - set(patients))
    for problem, ids in (("encoded more than once", twice), ("not encoded", missing), ("not in the cohort", extra)):
        if ids:
            raise StageError(
                f"encode shards: {len(ids)} patient(s) {problem} (e.g. {', '.join(ids[:3])}). Delete the "
                "workdir's encode/shards folder and rerun the encode stage."
            )


def _concat(parts: list, patients: list[str]):
    """One EncodedCohort from shards; a modality a shard lacks (a 1-column NaN block) is widened to NaN rows."""
    order = {p: i for i, p in enumerate(patients)}
    rows = np.array([order[p] for part in parts for p in part.patients])
    vectors, links, stats = {}, {}, {}
    for m in parts[0].vectors:
        dim = max(part.vectors[m].shape[1] for part in parts)
        stacked = np.concatenate([_widen(part.vectors[m], dim) for part in parts])
        vectors[m] = np.empty_like(stacked)
        vectors[m][rows] = stacked
        flat = [link for part in parts for link in part.links[m]]
        links[m] = [flat[i] for i in np.argsort(rows)]
        stats[m] = {}
        for part in parts:
            for k, v in part.stats.get(m, {}).items():  # per-patient counts add up; per-table ones are each shard's
                stats[m][k] = v if k.startswith("features") else stats[m].get(k, 0) + v
    failures = [f for part in parts for f in part.failures]
    return EncodedCohort(list(patients), vectors, links, failures, stats)


def _widen(v: np.ndarray, dim: int) -> np.ndarray:
    if v.shape[1] == dim:
        return v
    if not np.isnan(v).all():
        raise StageError(
            f"encode shards disagree on an embedding size ({v.shape[1]} vs {dim}): rerun the encode stage."
        )
    return np.full((len(v), dim), np.nan, dtype=v.dtype)


def encode_sharded(
    cohort, featurizer, patients: list[str], folder: Path, key: str, r: int, world: int, barrier: Callable[[], None],
    naming=None,
):  # fmt: skip
    """This rank's shard, then (rank 0, once every rank passed ``barrier``) the checked merge of all shards;
    ``None`` on the other ranks."""
    encode_shard(cohort, featurizer, patients, folder, key, r, world, naming)
    barrier()
    return merge_shards(folder, patients, key, world, naming) if r == 0 else None
