"""Sections of a clinical note (FINAL DIAGNOSIS, IMPRESSION, HISTORY, FINDINGS ...): how a note is cut.

A header is a line that opens with a name and a colon: a known header name in any case ("Impression:",
"final diagnosis:"), or an all-capital name of two words or more, or one standing alone on its line
("GROSS DESCRIPTION:", "ADDENDUM:"). Stain results such as "TTF-1: positive" or "ER: negative" are not
headers (one capitalised word followed by text). A section runs from its header to the next one; text before
the first header is the section ``untitled``.

The concept matcher records each mention's section with these rules, and the text encoder
(:mod:`clinicmm.encode.text.sections`) reads only the sections a workflow selects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    rest = line[m.end() :].strip()
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
