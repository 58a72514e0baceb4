"""Note de-identification for the obvious identifiers: known names, MRN-like numbers, contacts, dates.

Rule-based on purpose (no model to download): it removes what is known to identify this patient (the names in
their DICOM headers, the names a table gives, their ids and MRNs) and what looks like an identifier anywhere
(a labelled record number, a run of 7+ digits, a phone number, an e-mail address, a titled name such as
"Dr. Smith"). Dates are not removed but moved by the patient's keyed day shift, the same as their DICOM dates,
so "three weeks after the CT" stays true. Free text can hide identifiers no rule knows: review a sample.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = r"(?P<mon>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*)\.?"
DATE_PATTERNS = (  # digits may touch letters or '_' (file names such as path_2021-03-04.txt), not other digits
    ("iso", re.compile(r"(?<!\d)(?P<y>(?:19|20)\d\d)-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?!\d)")),
    ("us", re.compile(r"(?<!\d)(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>(?:19|20)\d\d)(?!\d)")),
    ("eu", re.compile(r"(?<![\d.])(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>(?:19|20)\d\d)(?!\d)")),
    ("compact", re.compile(r"(?<!\d)(?P<y>(?:19|20)\d\d)(?P<m>[01]\d)(?P<d>[0-3]\d)(?!\d)")),
    ("dmy", re.compile(rf"(?<!\d)(?P<d>\d{{1,2}})\s+{_MONTH}\s+(?P<y>(?:19|20)\d\d)(?!\d)", re.I)),
    ("mdy", re.compile(rf"\b{_MONTH}\s+(?P<d>\d{{1,2}}),?\s+(?P<y>(?:19|20)\d\d)(?!\d)", re.I)),
)
LABELLED_ID = re.compile(
    r"\b(?P<label>MRN|MR\s?#|MR\s?No\.?|medical\s+record(?:\s+(?:number|no\.?))?|patient\s+id|hospital\s+(?:number|no\.?)|"
    r"accession(?:\s+(?:number|no\.?))?|NHS\s+(?:number|no\.?)|SSN)\s*[:#]?\s*(?P<value>(?=[A-Z-]*\d)[A-Z0-9][A-Z0-9-]{3,})",
    re.I,
)  # a value holds a digit
LONG_NUMBER = re.compile(r"\b\d{7,}\b")
PHONE = re.compile(r"(?<!\d)(?:\+?\d{1,3}[\s.-])?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?!\d)")
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_WORD = r"[A-ZÀ-Ý][^\W\d_]*(?:['’-][^\W\d_]+)*"  # a capitalised word, accents and hyphens included
TITLED_NAME = re.compile(rf"\b(?P<title>Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+(?P<name>{_WORD}(?:\s+{_WORD})?)")


def _date(m: re.Match) -> dt.date | None:
    try:
        month = int(m.group("m")) if "m" in m.re.groupindex else MONTHS.index(m.group("mon")[:3].lower()) + 1
        return dt.date(int(m.group("y")), month, int(m.group("d")))
    except ValueError:
        return None


def _format(kind: str, day: dt.date, m: re.Match) -> str:
    if kind == "iso":
        return day.isoformat()
    if kind == "us":
        return f"{day.month:02d}/{day.day:02d}/{day.year}"
    if kind == "eu":
        return f"{day.day:02d}.{day.month:02d}.{day.year}"
    if kind == "compact":
        return day.strftime("%Y%m%d")
    mon = day.strftime("%B" if len(m.group("mon")) > 4 else "%b")
    return f"{day.day} {mon} {day.year}" if kind == "dmy" else f"{mon} {day.day}, {day.year}"


def shift_dates(text: str, days: int, counts: Counter | None = None) -> str:
    """Every recognised date in ``text`` moved by ``days``, written in its own format."""
    for kind, pattern in DATE_PATTERNS:

        def repl(m: re.Match, kind=kind) -> str:
            day = _date(m)
            if day is None:
                return m.group(0)
            if counts is not None:
                counts["dates_shifted"] += 1
            return _format(kind, day + dt.timedelta(days=days), m)

        text = pattern.sub(repl, text)
    return text


def shift_date_value(value: str, days: int) -> str:
    """A table cell holding one date (ISO or another recognised format) moved by ``days``; others unchanged."""
    return shift_dates(str(value), days) if value else value


def scrub(
    text: str,
    days: int,
    names: Iterable[str] = (),
    ids: Iterable[str] = (),
    replace: dict[str, str] | None = None,
    counts: Counter | None = None,
) -> str:
    """``text`` without the patient's known ``names`` and ``ids``, MRN-like numbers, phones, e-mails and titled
    names; ``replace`` maps known strings (the patient's id) to their stand-in (the pseudonym); dates shifted."""
    counts = counts if counts is not None else Counter()

    def sub(pattern: re.Pattern, repl, key: str, s: str) -> str:
        s, n = pattern.subn(repl, s)
        counts[key] += n
        return s

    for original, stand_in in (replace or {}).items():
        if original:
            text = sub(re.compile(re.escape(original), re.I), stand_in, "ids", text)
    for value in sorted({i for i in ids if i}, key=len, reverse=True):
        text = sub(re.compile(rf"(?<!\w){re.escape(value)}(?!\w)", re.I), "[ID]", "ids", text)
    text = sub(LABELLED_ID, lambda m: f"{m.group('label')} [ID]", "ids", text)
    text = sub(EMAIL, "[EMAIL]", "contacts", text)
    text = sub(PHONE, "[PHONE]", "contacts", text)
    text = shift_dates(text, days, counts)
    text = sub(LONG_NUMBER, "[ID]", "ids", text)
    for name in sorted({n for n in names if len(n) >= 2}, key=len, reverse=True):
        text = sub(re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.I), "[NAME]", "names", text)
    return sub(TITLED_NAME, lambda m: f"{m.group('title')}. [NAME]", "names", text)
