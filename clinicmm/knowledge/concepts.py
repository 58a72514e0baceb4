"""Clinical-concept linking with NegEx / ConText-style negation, hypothetical and family-history detection.

``ConceptMatcher`` finds the knowledge graph's concepts (sites, histologies, biomarkers, body parts) in report
text and says, for every mention, whether it is asserted for this patient. Notes link to the graph only
through ``positive()``, so "No evidence of squamous cell carcinoma" never counts as squamous evidence.

Rules (written for pathology and radiology reports):

* Matching is case-insensitive and whole-word, on the concept name and its synonyms; a hyphen in a form may
  be written as a space or left out ("TTF-1", "TTF 1", "TTF1"), words may be split by any white space or a
  hyphen, and a trailing plural ``s`` is allowed. The longest form starting at a position wins, so
  "squamous cell carcinoma" is never also "carcinoma". A form shared by several concepts (``lung`` names
  ``site:lung`` and the body part ``bodypart:chest``) gives one mention per concept.
* Triggers come from ``data/context_triggers.tsv`` (phrase, category, direction): ``negated``,
  ``hypothetical`` and ``family`` triggers act forward (``pre``) or backward (``post``) from where they stand;
  ``pseudo`` phrases ("not only", "triple negative") are consumed and do nothing; ``terminate`` phrases
  ("but", "however", "which", "positive for", "is present" ...) end a scope.
* A scope runs to the sentence end (``.``, ``;``, ``!``, ``?`` before white space, a line break unless the
  next line continues in lower case, a section header) or to the first ``terminate`` phrase or trigger of
  another category, whichever comes first. No word-count window.
* Uncertainty is *hypothetical*: "rule out", "possible", "suspicious for", "concerning for", "cannot be
  excluded", "if", "should" ... -- "suspicious for malignancy" is a diagnostic category of uncertainty, not
  an assertion, so it is never positive evidence. "likely", "probable", "favor", "consistent with" stay
  asserted.
* Section headers (``FINAL DIAGNOSIS:``: a known header word in any case, or an all-capital header that
  has two words or stands alone on its line; the rules live in :mod:`clinicmm.encode.text.sections`, shared with
  the text encoder's section selection) are recorded on each mention; mentions under a ``FAMILY HISTORY``
  header are family mentions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clinicmm.errors import InputError
from clinicmm.knowledge.sections import header as _header
from clinicmm.knowledge.sections import norm as _norm

CATEGORIES = ("negated", "hypothetical", "family")
FAMILY_SECTIONS = frozenset({"family history"})
_TRIGGER_KINDS = frozenset(
    {(c, d) for c in CATEGORIES for d in ("pre", "post")} | {("pseudo", "-"), ("terminate", "-")}
)
_SENTENCE_END = re.compile(r"[.;!?](?=\s|$)")


@dataclass(frozen=True)
class Concept:
    """One concept of the knowledge graph: ``site:lung``, ``histology:adenocarcinoma``, ``biomarker:ttf1``."""

    id: str
    name: str
    kind: str  # site | histology | biomarker | bodypart
    synonyms: tuple[str, ...] = ()

    def forms(self) -> list[str]:
        """The lower-case surface forms that name this concept: its name, then its synonyms."""
        return list(dict.fromkeys(_norm(f) for f in (self.name, *self.synonyms) if f.strip()))


@dataclass(frozen=True)
class Mention:
    """One concept found in a text, with character offsets and its ConText attributes."""

    concept_id: str
    start: int
    end: int
    text: str
    negated: bool = False
    hypothetical: bool = False
    family: bool = False
    section: str | None = None

    @property
    def asserted(self) -> bool:
        """True when the mention states the concept for this patient (not negated, hypothetical or family)."""
        return not (self.negated or self.hypothetical or self.family)


@dataclass(frozen=True)
class _Trigger:
    start: int
    end: int
    category: str  # negated | hypothetical | family | pseudo | terminate
    direction: str  # pre | post | -


def _key(form: str) -> str:
    """Key of a form: lower case without white space or hyphens (forms differing only so match the same text)."""
    return re.sub(r"[\s\-]+", "", form.lower())


def _form_pattern(form: str) -> str:
    """Regex for one lower-case form: spaces match white space or a hyphen; a hyphen may be a space or absent."""
    words = [r"[\s\-]?".join(re.escape(part) for part in word.split("-")) for word in form.split()]
    return r"[\s\-]+".join(words)


def _alternation(forms: list[str], plural: bool) -> tuple[re.Pattern[str], list[str]]:
    """Whole-word regex matching any form, longest first so the longest form at a position wins.

    Returns the regex and the keys in group order: a match's ``lastgroup`` ``k<i>`` names the form it matched.
    """
    ordered = sorted(set(forms), key=lambda f: (-len(f), f))
    body = "|".join(f"(?P<k{i}>{_form_pattern(form)})" for i, form in enumerate(ordered)) or "(?!)"
    suffix = r"(?:(?<=[a-z])s)?" if plural else ""
    regex = re.compile(rf"(?<!\w)(?:{body}){suffix}(?!\w)", re.IGNORECASE)
    return regex, [_key(form) for form in ordered]


def load_triggers(path: str | Path | None = None) -> list[tuple[str, str, str]]:
    """``(phrase, category, direction)`` rows of a trigger TSV (default: the shipped ``context_triggers.tsv``)."""
    if path is None:
        text = resources.files("clinicmm.knowledge").joinpath("data/context_triggers.tsv").read_text("utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    rows = []
    for number, line in enumerate(text.splitlines()[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 3 or (fields[1], fields[2]) not in _TRIGGER_KINDS:
            raise InputError(
                f"{path or 'context_triggers.tsv'}, line {number}: expected phrase<TAB>category<TAB>"
                f"direction with category/direction one of {sorted(_TRIGGER_KINDS)}"
            )
        rows.append((_norm(fields[0]), fields[1], fields[2]))
    return rows


class ConceptMatcher:
    """Find concepts in clinical text and mark each mention negated / hypothetical / family (see module doc)."""

    def __init__(self, concepts: list[Concept], triggers: list[tuple[str, str, str]] | None = None):
        self._ids: dict[str, list[str]] = {}
        for concept in concepts:
            for form in concept.forms():
                ids = self._ids.setdefault(_key(form), [])
                if concept.id not in ids:
                    ids.append(concept.id)
        self._concept_re, self._concept_keys = _alternation([f for c in concepts for f in c.forms()], plural=True)
        rows = load_triggers() if triggers is None else triggers
        self._trigger_kind: dict[str, list[tuple[str, str]]] = {}
        for phrase, category, direction in rows:
            self._trigger_kind.setdefault(_key(phrase), []).append((category, direction))
        self._trigger_re, self._trigger_keys = _alternation([p for p, _, _ in rows], plural=False)

    def find(self, text: str) -> list[Mention]:
        """Every concept mention in ``text``, in order of position (one per concept when a form is shared)."""
        if not text or not self._ids:
            return []
        out: list[Mention] = []
        for start, end, section in sentences(text):
            out.extend(self._find_in(text, start, end, section))
        return out

    def positive(self, text: str) -> list[str]:
        """Sorted unique concept ids with at least one asserted mention (not negated, hypothetical or family)."""
        return sorted({m.concept_id for m in self.find(text) if m.asserted})

    def _find_in(self, text: str, start: int, end: int, section: str | None) -> list[Mention]:
        found = [
            (m.start(), m.end(), self._concept_keys[int(m.lastgroup[1:])])
            for m in self._concept_re.finditer(text, start, end)
        ]
        if not found:
            return []
        triggers = self._triggers(text, start, end, [(s, e) for s, e, _ in found])
        family_section = section in FAMILY_SECTIONS
        out = []
        for s, e, key in found:
            flags = {c: _in_scope(c, s, e, triggers) for c in CATEGORIES}
            flags["family"] = flags["family"] or family_section
            for cid in self._ids[key]:
                out.append(Mention(cid, s, e, text[s:e], section=section, **flags))
        return out

    def _triggers(self, text: str, start: int, end: int, spans: list[tuple[int, int]]) -> list[_Trigger]:
        """Trigger phrases of one sentence, except those overlapping a concept mention."""
        if not self._trigger_keys:
            return []
        out = []
        for m in self._trigger_re.finditer(text, start, end):
            if any(m.start() < e and s < m.end() for s, e in spans):
                continue
            for category, direction in self._trigger_kind[self._trigger_keys[int(m.lastgroup[1:])]]:
                out.append(_Trigger(m.start(), m.end(), category, direction))
        return out


def _in_scope(category: str, start: int, end: int, triggers: list[_Trigger]) -> bool:
    """True when a ``category`` trigger reaches the mention ``[start, end)`` with no scope end in between."""
    for t in triggers:
        if t.category != category:
            continue
        if t.direction == "pre" and t.end <= start and not _blocked(category, t.end, start, triggers):
            return True
        if t.direction == "post" and t.start >= end and not _blocked(category, end, t.start, triggers):
            return True
    return False


def _blocked(category: str, lo: int, hi: int, triggers: list[_Trigger]) -> bool:
    """A terminate phrase or a trigger of another category lies within ``[lo, hi)``."""
    return any(
        lo <= t.start and t.end <= hi and (t.category == "terminate" or t.category not in (category, "pseudo"))
        for t in triggers
    )


def sentences(text: str) -> list[tuple[int, int, str | None]]:
    """``(start, end, section)`` of each sentence of ``text``; section is the lower-case header or None."""
    out = []
    for start, end, section in _blocks(text):
        cut = start
        for m in _SENTENCE_END.finditer(text, start, end):
            out.append((cut, m.end(), section))
            cut = m.end()
        if text[cut:end].strip():
            out.append((cut, end, section))
    return [s for s in out if text[s[0] : s[1]].strip()]


def _blocks(text: str) -> list[tuple[int, int, str | None]]:
    """Runs of lines under one header; a line starting in lower case continues the line before it."""
    blocks: list[list] = []
    section = None
    for m in re.finditer(r"[^\r\n]+", text):
        line, start = m.group(), m.start()
        header = _header(line)
        if header is not None:
            section, offset = header
            blocks.append([start + offset, m.end(), section])
        elif blocks and line.lstrip()[:1].islower():
            blocks[-1][1] = m.end()
        else:
            blocks.append([start, m.end(), section])
    return [(s, e, sec) for s, e, sec in blocks]
