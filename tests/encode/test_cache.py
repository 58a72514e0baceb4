"""Embedding cache: hits for unchanged encoder + input, misses otherwise, atomic entries."""

import numpy as np

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
