"""A killed image encode keeps every batch it finished: the rerun encodes only the missing series, and the
embeddings it ends with are those of an uninterrupted run (Featurizer + real ImageEncoder on tiny DICOM series)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import body, write_series

from clinicmm.config import EncodersSpec, ImageEncoderSpec
from clinicmm.encode.featurizer import Featurizer
from clinicmm.encode.imaging.encoder import ImageEncoder
from clinicmm.knowledge.graph import KnowledgeGraph

N = 10
SPEC = EncodersSpec(image=ImageEncoderSpec(spatial_size=(4, 16, 16), batch_size=2))


class _Killed(BaseException):
    """Stands in for SIGKILL / Ctrl-C: a BaseException, so no ``except Exception`` in the way swallows it."""


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    root = tmp_path_factory.mktemp("resume")
    out = []
    for k in range(N):
        vol = body("chest" if k % 2 else "abdomen", shape=(4, 16, 16)) + 10.0 * k  # every series different
        out.append([str(p) for p in write_series(root / f"s{k}", vol, patient=f"P{k}")])
    return out


def _featurizer(cache: Path, encoded: list[int], die_after: int | None = None) -> Featurizer:
    """A Featurizer whose image encoder counts the series it encodes and dies after ``die_after`` of them."""
    featurizer = Featurizer(SPEC, KnowledgeGraph.default(), cache_dir=cache, progress=False)
    enc = ImageEncoder(SPEC.image)
    real = enc.encode

    def encode(batch: list[list[str]], progress: bool = True):
        if die_after is not None and len(encoded) + len(batch) > die_after:
            raise _Killed
        encoded.extend(int(Path(s[0]).parent.name[1:]) for s in batch)
        return real(batch, progress=progress)

    enc.encode = encode  # type: ignore[method-assign]
    featurizer._image = enc
    return featurizer


def test_rerun_after_a_kill_at_90_percent_encodes_only_the_missing_series(tmp_path: Path, series) -> None:
    parts = ["CHEST"] * N
    full, _, info = _featurizer(tmp_path / "clean", []).images(series, parts)
    assert info["stats"] == {"encoded": N, "cached": 0, "failed": 0}

    first: list[int] = []
    with pytest.raises(_Killed):  # the batch holding the 10th series never finishes
        _featurizer(tmp_path / "cache", first, die_after=9).images(series, parts)
    assert first == list(range(8))

    again: list[int] = []
    vectors, _, info = _featurizer(tmp_path / "cache", again).images(series, parts)
    assert again == [8, 9]  # 20% of the cohort, the batch in flight when it died
    assert info["stats"] == {"encoded": 2, "cached": 8, "failed": 0}
    np.testing.assert_allclose(vectors, full, rtol=0, atol=1e-6)

    third: list[int] = []
    vectors, _, info = _featurizer(tmp_path / "cache", third).images(series, parts)
    assert third == [] and info["stats"]["cached"] == N
    np.testing.assert_allclose(vectors, full, rtol=0, atol=1e-6)


def test_without_a_cache_folder_every_series_is_still_encoded_batch_by_batch(series) -> None:
    encoded: list[int] = []
    featurizer = _featurizer(None, encoded)
    featurizer.cache_dir = None
    vectors, _, info = featurizer.images(series[:5], ["CHEST"] * 5)
    assert encoded == list(range(5)) and info["stats"]["encoded"] == 5
    assert not np.isnan(vectors).any()
