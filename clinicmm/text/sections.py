"""Sections of a clinical note (FINAL DIAGNOSIS, IMPRESSION, HISTORY, FINDINGS ...) and which of them count.

A header is a line that opens with a name and a colon: a known header name in any case ("Impression:",
"final diagnosis:"), or an all-capital name of two words or more, or one standing alone on its line
("GROSS DESCRIPTION:", "ADDENDUM:"). Stain results such as "TTF-1: positive" or "ER: negative" are not
headers (one capitalised word followed by text). A section runs from its header to the next one; text before
the first header is the section ``untitled``.

The concept matcher records each mention's section with the same rules, and the text encoder uses
:func:`note_pieces` to read only the sections a workflow selects, weighted as it says
(``encoders.text.sections``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clinicmm.config import TextSectionsSpec

UNTITLED = "untitled"
KNOWN_HEADERS = frozenset(
    "addendum|assessment|clinical history|clinical information|comment|comments|conclusion|diagnosis|"
    "family history|final diagnosis|findings|gross description|history|history of present illness|"
    "immunohistochemistry|impression|indication|microscopic description|past medical history|plan|"
    "procedure|social history|specimen|summary|synoptic report|technique".split("|")
)
_HEADER = re.compile(r"\s*([A-Za-z][A-Za-z /&()-]{0,48}?)\s*:(?=\s|$)")


@dataclass(frozen=True)
class Section:
    """One section: its lower-case name (``untitled`` before any header) and character span in the note.

    ``start`` is where the header begins (so the span includes it); ``body`` where the text after the colon begins.
    """

    name: str
    start: int
    body: int
    end: int


def norm(name: str) -> str:
    """A section or header name as compared: lower case, single spaces."""
    return " ".join(name.lower().split())


def header(line: str) -> tuple[str, int] | None:
    """``(section name, offset of the text after the colon)`` when ``line`` opens with a section header."""
    m = _HEADER.match(line)
    if m is None:
        return None
    name = norm(m.group(1))
    rest = line[m.end():].strip()
    capitals = m.group(1).upper() == m.group(1)
    if name in KNOWN_HEADERS or (capitals and (len(name.split()) >= 2 or not rest)):
        return name, m.end()
    return None


def split_sections(text: str) -> list[Section]:
    """The sections of ``text`` in order; a note without headers is one ``untitled`` section."""
    out: list[Section] = []
    for m in re.finditer(r"[^\r\n]+", text):
        found = header(m.group())
        if found is None:
            continue
        if out:
            out[-1] = Section(out[-1].name, out[-1].start, out[-1].body, m.start())
        elif text[: m.start()].strip():
            out.append(Section(UNTITLED, 0, 0, m.start()))
        start = m.start() + len(m.group()) - len(m.group().lstrip())
        out.append(Section(found[0], start, m.start() + found[1], len(text)))
    return out or [Section(UNTITLED, 0, 0, len(text))]


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
        (text[s.start:s.end], weights.get(s.name, 1.0))
        for s in split_sections(text)
        if (include is None or s.name in include) and s.name not in exclude and text[s.start:s.end].strip()
    ]
    return pieces or [(text, 1.0)]
