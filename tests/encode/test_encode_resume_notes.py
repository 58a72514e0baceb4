"""Notes share the image cache's resumable path: a note encode that dies part-way keeps every finished batch, and
the rerun encodes only the notes still missing (a stub text encoder counts what it is asked to encode)."""

from __future__ import annotations

import numpy as np
import pytest

from clinicmm.config import EncodersSpec, TextEncoderSpec
from clinicmm.encode.featurizer import Featurizer
from clinicmm.knowledge.graph import KnowledgeGraph

SPEC = EncodersSpec(text=TextEncoderSpec(batch_size=3))
NOTES = [[f"note {k} of patient {p}" for k in range(2)] for p in range(10)]  # 20 notes


class _Died(BaseException):
    pass


class _Text:
    """Stands in for TextEncoder: a note's vector is a function of its text; dies after ``die_after`` notes."""

    dim = 3

    def __init__(self, seen: list[str], die_after: int | None = None) -> None:
        self.seen, self.die_after = seen, die_after

    def fingerprint(self) -> str:
        return "stub-text"

    def encode(self, texts: list[str], progress: bool = True) -> np.ndarray:
        assert progress is False  # the cache's bar counts every note; the encoder's own stays off
        if self.die_after is not None and len(self.seen) + len(texts) > self.die_after:
            raise _Died
        self.seen.extend(texts)
        return np.array([[len(t), sum(map(ord, t)) % 97, t.count("1")] for t in texts], dtype=np.float32)


def _featurizer(cache, seen, die_after=None) -> Featurizer:
    featurizer = Featurizer(SPEC, KnowledgeGraph.default(), cache_dir=cache, progress=False)
    featurizer._text = _Text(seen, die_after)
    return featurizer


def test_a_killed_note_encode_resumes_with_only_the_missing_notes(tmp_path) -> None:
    full, _, _ = _featurizer(tmp_path / "clean", []).notes(NOTES)
    first: list[str] = []
    with pytest.raises(_Died):
        _featurizer(tmp_path / "cache", first, die_after=18).notes(NOTES)
    assert len(first) == 18  # six batches of 3 committed; the seventh died
    again: list[str] = []
    vectors, _, info = _featurizer(tmp_path / "cache", again).notes(NOTES)
    flat = [t for notes in NOTES for t in notes]
    assert again == flat[18:]
    assert info["stats"] == {"encoded": 2, "cached": 18, "failed": 0}
    np.testing.assert_array_equal(vectors, full)
