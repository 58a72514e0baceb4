"""Tests of clinicmm.encode.text.sections and section-weighted pooling in the text encoder (on a tiny local BERT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny_text_model import build_tiny_bert

from clinicmm.config import TextEncoderSpec, TextSectionsSpec
from clinicmm.encode.text.encoder import TextEncoder
from clinicmm.encode.text.sections import note_pieces
from clinicmm.knowledge.sections import UNTITLED, split_sections

REPORT = (
    "Surgical pathology report, accession redacted.\n"
    "CLINICAL HISTORY: Rule out lymphoma.\n"
    "GROSS DESCRIPTION:\n"
    "Received in formalin, a wedge of lung.\n"
    "FINAL DIAGNOSIS:\n"
    "Lung, right upper lobe: invasive adenocarcinoma.\n"
    "TTF-1: positive.\n"
    "Comment: margins free.\n"
)


def test_sections_are_found_with_spans() -> None:
    sections = split_sections(REPORT)
    assert [s.name for s in sections] == [
        UNTITLED,
        "clinical history",
        "gross description",
        "final diagnosis",
        "comment",
    ]
    final = sections[3]
    assert REPORT[final.start : final.end].startswith("FINAL DIAGNOSIS:")
    assert "TTF-1: positive." in REPORT[final.body : final.end]  # a stain result is not a header
    assert REPORT[sections[-1].body : sections[-1].end].strip() == "margins free."
    assert [s.name for s in split_sections("no headers at all")] == [UNTITLED]


def test_note_pieces_select_exclude_weight_and_fall_back() -> None:
    assert note_pieces(REPORT, TextSectionsSpec()) == [(REPORT, 1.0)]
    pieces = note_pieces(
        REPORT, TextSectionsSpec(include=["Final Diagnosis", "comment"], weights={"FINAL diagnosis": 3})
    )
    assert [(p.split(":")[0], w) for p, w in pieces] == [("FINAL DIAGNOSIS", 3.0), ("Comment", 1.0)]
    assert [
        p.split(":")[0] for p, _ in note_pieces(REPORT, TextSectionsSpec(exclude=["clinical history", UNTITLED]))
    ] == ["GROSS DESCRIPTION", "FINAL DIAGNOSIS", "Comment"]
    assert note_pieces("Adenocarcinoma.", TextSectionsSpec(include=["impression"])) == [("Adenocarcinoma.", 1.0)]
    with pytest.raises(ValueError, match="weight of section"):
        TextSectionsSpec(weights={"impression": 0})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / "model")


def _encoder(tiny: Path, **sections) -> TextEncoder:
    return TextEncoder(TextEncoderSpec(model_path=tiny, max_length=24, stride=4, sections=TextSectionsSpec(**sections)))


def test_selected_section_alone_gives_the_vector(tiny: Path, one_thread) -> None:
    only = _encoder(tiny, include=["final diagnosis"])
    final = next(s for s in split_sections(REPORT) if s.name == "final diagnosis")
    whole = _encoder(tiny)
    np.testing.assert_allclose(
        only.encode([REPORT], progress=False)[0],
        whole.encode([REPORT[final.start : final.end]], progress=False)[0],
        atol=1e-6,
    )
    assert not np.allclose(
        whole.encode([REPORT], progress=False)[0], only.encode([REPORT], progress=False)[0], atol=1e-3
    )


def test_weights_scale_each_sections_tokens(tiny: Path, one_thread) -> None:
    weighted = _encoder(tiny, include=["final diagnosis", "comment"], weights={"final diagnosis": 3.0})
    (a, _), (b, _) = note_pieces(REPORT, weighted.spec.sections)
    sums, counts = weighted._encode_batch([a, b])
    expected = (3 * sums[0] + sums[1]) / (3 * counts[0] + counts[1])
    np.testing.assert_allclose(weighted.encode([REPORT], progress=False)[0], expected.numpy(), atol=1e-6)


def test_sections_join_the_fingerprint(tiny: Path) -> None:
    default = _encoder(tiny).fingerprint()
    assert _encoder(tiny, include=["impression"]).fingerprint() != default
    assert _encoder(tiny, exclude=["family history"]).fingerprint() != default
    assert _encoder(tiny).fingerprint() == default
