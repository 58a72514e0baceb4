"""Embedding cache: hits for unchanged encoder + input, misses otherwise, atomic entries."""

import logging

import numpy as np
import pytest

from clinicmm.encode.cache import EmbeddingCache
from clinicmm.files import digest_bytes, digest_files


def _encoder(calls):
    def encode(positions):
        calls.append(list(positions))
        return np.stack([np.full(3, p, dtype=np.float32) for p in positions]), {}

    return encode


def test_second_pass_encodes_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path, "fp-a")
    calls = []
    digests = [digest_bytes(t) for t in ("note one", "note two", "note three")]
    first, s1 = cache.get_or_encode(digests, _encoder(calls), 3)
    second, s2 = cache.get_or_encode(digests, _encoder(calls), 3)
    assert (s1.misses, s1.hits) == (3, 0) and (s2.misses, s2.hits) == (0, 3)
    assert calls == [[0, 1, 2]]
    np.testing.assert_array_equal(first, second)


def test_changed_fingerprint_or_input_misses(tmp_path):
    calls = []
    d = [digest_bytes("a"), digest_bytes("b")]
    EmbeddingCache(tmp_path, "fp-a").get_or_encode(d, _encoder(calls), 3)
    _, stats = EmbeddingCache(tmp_path, "fp-b").get_or_encode(d, _encoder(calls), 3)
    assert stats.misses == 2
    _, stats = EmbeddingCache(tmp_path, "fp-a").get_or_encode([d[0], digest_bytes("c")], _encoder(calls), 3)
    assert (stats.hits, stats.misses) == (1, 1)


def test_failures_are_nan_counted_and_not_cached(tmp_path):
    cache = EmbeddingCache(tmp_path, "fp")

    def encode(positions):
        return np.ones((len(positions), 2), dtype=np.float32), {1: "corrupt pixel data"}

    d = [digest_bytes("x"), digest_bytes("y")]
    out, stats = cache.get_or_encode(d, encode, 2)
    assert np.isnan(out[1]).all() and not np.isnan(out[0]).any()
    assert stats.failed == {d[1]: "corrupt pixel data"}
    assert cache.get(d[1]) is None and cache.get(d[0]) is not None
    assert not list(tmp_path.rglob("*.tmp"))


def test_digests_separate_parts_and_follow_file_content(tmp_path):
    assert digest_bytes("ab", "c") != digest_bytes("a", "bc")
    f = tmp_path / "f.dcm"
    f.write_bytes(b"one")
    before = digest_files([f])
    f.write_bytes(b"two")
    assert digest_files([f]) != before


class _Killed(Exception):
    """Stands in for the process dying (SIGKILL, Ctrl-C) part-way through an encode."""


def _dying_encoder(calls, die_after=None):
    """Encodes one input at a time (vector = f(digest index)); raises once ``die_after`` inputs are done."""

    def encode(positions):
        out = []
        for p in positions:
            if die_after is not None and sum(map(len, calls)) + len(out) >= die_after:
                calls.append(list(positions[: len(out)]))
                raise _Killed
            out.append(np.linspace(p, p + 1, 4, dtype=np.float32) ** 2)
        calls.append(list(positions))
        return np.stack(out), {}

    return encode


def test_an_encode_killed_part_way_keeps_finished_chunks_and_the_rerun_encodes_only_the_rest(tmp_path):
    digests = [digest_bytes(f"series {k}") for k in range(20)]
    full, _ = EmbeddingCache(tmp_path / "uninterrupted", "fp").get_or_encode(digests, _dying_encoder([]), 4, chunk=4)

    cache = EmbeddingCache(tmp_path / "killed", "fp")
    first = []
    with pytest.raises(_Killed):  # dies on the 19th input (90%): chunks 0-3 committed, the 5th chunk's 2 lost
        cache.get_or_encode(digests, _dying_encoder(first, die_after=18), 4, chunk=4)
    assert sum(map(len, first)) == 18
    kept = [i for i, d in enumerate(digests) if cache.get(d) is not None]
    assert kept == list(range(16))
    assert not list((tmp_path / "killed").rglob("*.tmp"))

    rerun = []
    out, stats = cache.get_or_encode(digests, _dying_encoder(rerun), 4, chunk=4)
    assert sorted(p for call in rerun for p in call) == list(range(16, 20))  # only the missing ones
    assert (stats.hits, stats.misses) == (16, 4)
    assert len(rerun) == 1  # one chunk
    np.testing.assert_array_equal(out, full)
    for i, d in enumerate(digests):
        np.testing.assert_array_equal(cache.get(d), full[i])


def test_chunks_are_committed_before_the_next_is_encoded(tmp_path):
    cache = EmbeddingCache(tmp_path, "fp")
    digests = [digest_bytes(str(k)) for k in range(7)]
    seen_in_cache = []

    def encode(positions):
        seen_in_cache.append(sum(cache.get(d) is not None for d in digests))
        return np.ones((len(positions), 2), dtype=np.float32), {}

    cache.get_or_encode(digests, encode, 2, chunk=3, progress=False)
    assert seen_in_cache == [0, 3, 6]  # three chunks (3, 3, 1), each sees the previous ones committed


def test_an_unreadable_entry_is_re_encoded_and_replaced(tmp_path):
    cache = EmbeddingCache(tmp_path, "fp")
    d = [digest_bytes("x")]
    cache.get_or_encode(d, _encoder([]), 3)
    cache._path(d[0]).write_bytes(b"\x93NUMPY truncated")
    calls = []
    out, stats = cache.get_or_encode(d, _encoder(calls), 3)
    assert calls == [[0]] and stats.misses == 1
    np.testing.assert_array_equal(cache.get(d[0]), out[0])


def test_the_summary_log_counts_without_naming_inputs(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path, "fp")
    digests = [digest_bytes(f"/data/MRN-123/{k}") for k in range(5)]
    cache.get_or_encode(digests[:2], _encoder([]), 3, chunk=2)
    with caplog.at_level(logging.INFO, logger="clinicmm"):
        cache.get_or_encode(digests, _encoder([]), 3, chunk=2, desc="encoding images", unit="series")
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encoding images")]
    assert "3 encoded" in line and "2 from the cache" in line and "0 failed" in line and "series/s" in line
    assert "MRN" not in caplog.text and digests[0] not in caplog.text


def test_without_a_terminal_progress_goes_to_the_log(tmp_path, caplog, monkeypatch):
    from clinicmm.encode import cache as cache_module

    monkeypatch.setattr(cache_module, "LOG_EVERY_S", 0.0)  # every chunk; pytest's stderr is not a terminal
    digests = [digest_bytes(str(k)) for k in range(6)]
    with caplog.at_level(logging.INFO, logger="clinicmm"):
        EmbeddingCache(tmp_path, "fp").get_or_encode(digests, _encoder([]), 3, chunk=2, desc="encoding notes")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encoding notes:")]
    assert [line.split(" ")[2] for line in lines[:2]] == ["2/6", "4/6"] and "/s" in lines[0]
    assert "6 encoded" in lines[-1]
