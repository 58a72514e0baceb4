"""Which sections of a note the text encoder reads, and with what weight (``encoders.text.sections``).

The sections themselves are cut by :mod:`clinicmm.knowledge.sections`, the rules the concept matcher uses too.
"""

from __future__ import annotations

from clinicmm.config import TextSectionsSpec
from clinicmm.knowledge.sections import norm, split_sections


def is_default(spec: TextSectionsSpec) -> bool:
    """True when every section counts with weight 1 (the note is read whole)."""
    return spec.include is None and not spec.exclude and not spec.weights


def note_pieces(text: str, spec: TextSectionsSpec) -> list[tuple[str, float]]:
    """``(text, weight)`` of the parts of a note the encoder reads (header line included, for context).

    With the default spec, the whole note with weight 1. A note none of whose sections is selected is read
    whole with weight 1 rather than dropped, so a note without headers still has a vector.
    """
    if is_default(spec):
        return [(text, 1.0)]
    include = {norm(n) for n in spec.include} if spec.include is not None else None
    exclude = {norm(n) for n in spec.exclude}
    weights = {norm(n): w for n, w in spec.weights.items()}
    pieces = [
        (text[s.start : s.end], weights.get(s.name, 1.0))
        for s in split_sections(text)
        if (include is None or s.name in include) and s.name not in exclude and text[s.start : s.end].strip()
    ]
    return pieces or [(text, 1.0)]
