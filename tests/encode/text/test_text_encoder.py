"""Tests of clinicmm.encode.text.encoder.TextEncoder with the shipped MiniLM (loaded once for the module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clinicmm.config import TextEncoderSpec
from clinicmm.encode.text.encoder import TextEncoder, default_model_path
from clinicmm.errors import ModelError

SPEC = TextEncoderSpec(max_length=64, stride=8, batch_size=4)
NOTE = "Bronchoscopic biopsy of the right upper lobe of the lung shows invasive adenocarcinoma."
PARAPHRASE = "Lung biopsy from the right upper lobe demonstrates an invasive adenocarcinoma."
OTHER = "Partial nephrectomy: the renal cortex mass is a papillary renal cell carcinoma, type 1."


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(SPEC)


@pytest.fixture(scope="module")
def vectors(encoder: TextEncoder) -> np.ndarray:
    return encoder.encode([NOTE, PARAPHRASE, OTHER], progress=False)


def test_shape_dtype_and_determinism(encoder: TextEncoder, vectors: np.ndarray) -> None:
    assert encoder.dim == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_array_equal(encoder.encode([NOTE, PARAPHRASE, OTHER], progress=False), vectors)


def test_matches_sentence_transformers(vectors: np.ndarray) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(default_model_path()), device="cpu").encode([NOTE])[0]
    assert _cos(vectors[0], reference) > 0.999


def test_paraphrase_is_closer_than_another_diagnosis(vectors: np.ndarray) -> None:
    assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2]) + 0.1


def test_long_note_is_read_in_several_chunks(encoder: TextEncoder) -> None:
    long_note = " ".join([NOTE] * 4 + [OTHER] * 4)
    tokenizer, _ = encoder._load()
    chunks = tokenizer(long_note, truncation=True, max_length=SPEC.max_length, stride=SPEC.stride,
                       return_overflowing_tokens=True)["input_ids"]  # fmt: skip
    assert len(chunks) >= 3
    first_chunk = tokenizer.decode(chunks[0], skip_special_tokens=True)
    whole, head = encoder.encode([long_note, first_chunk], progress=False)
    assert _cos(whole, head) < 0.98  # the later chunks (about the kidney) moved the vector
    # with a window wide enough for the whole note there is one chunk, and the vector is that chunk's mean
    wide = TextEncoder(TextEncoderSpec(max_length=512, stride=8))
    wide._tokenizer, wide._model = encoder._load()
    assert _cos(wide.encode([long_note], progress=False)[0], whole) > 0.9


def test_batch_size_does_not_change_vectors(encoder: TextEncoder, vectors: np.ndarray) -> None:
    one_by_one = TextEncoder(TextEncoderSpec(max_length=64, stride=8, batch_size=1))
    one_by_one._tokenizer, one_by_one._model = encoder._load()
    np.testing.assert_allclose(one_by_one.encode([NOTE, PARAPHRASE, OTHER], progress=False), vectors, atol=1e-5)


def test_bad_model_path_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="encoders.text.model_path"):
        TextEncoder(TextEncoderSpec(model_path=tmp_path / "missing"))
    with pytest.raises(ModelError, match="has no config.json.*encoders.text.model_path"):
        TextEncoder(TextEncoderSpec(model_path=tmp_path))


def test_window_larger_than_the_model_is_refused() -> None:
    with pytest.raises(ModelError, match="encoders.text.max_length"):
        TextEncoder(TextEncoderSpec(max_length=1024))


def test_fingerprint_tracks_settings_that_change_vectors(encoder: TextEncoder) -> None:
    print_ = encoder.fingerprint()
    assert print_ == TextEncoder(SPEC).fingerprint()
    assert TextEncoder(TextEncoderSpec(max_length=128, stride=8)).fingerprint() != print_
    assert TextEncoder(TextEncoderSpec(max_length=64, stride=8, batch_size=32)).fingerprint() == print_
