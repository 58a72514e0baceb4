"""Note de-identification for the obvious identifiers: known names, MRN-like numbers, contacts, dates.

Rule-based on purpose (no model to download): it removes what is known to identify this patient (the names in
their DICOM headers, the names a table gives, their ids and MRNs) and what looks like an identifier anywhere
(a labelled record, specimen or account number, a run of 7+ digits, an SSN, a phone or fax number, an e-mail
address, a URL or IP address, a street address, a US ZIP or UK postcode, a titled name such as "Dr. Smith", a
name after a label such as "Patient name:" or "Signed by", a name followed by a credential such as "MD").
A date of birth (after "DOB", "date of birth", "born on" ..., in any recognised format) is removed, not shifted:
shifting keeps a birth date exact to within two years, enough to re-identify with the sex and the postcode.
Other dates are not removed but moved by the patient's keyed day shift, the same as their DICOM dates, so
"three weeks after the CT" stays true. Ages over 89 become "90+" (HIPAA Safe Harbor).

What no pattern can promise (:data:`LIMITS`, written into the de-identification report): free text can hide
identifiers no rule knows. When ``presidio_analyzer`` (and a spaCy model) is installed, :func:`ner_scrubber` adds
a named-entity pass on top of the rules; it lowers the risk, it does not remove it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable

log = logging.getLogger("clinicmm")

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
# --- dates of birth: the label, then a date in any common form (2-digit years and month-year included)
_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
_ANY_DATE = (
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # 1956-03-14, 1956/3/14
    r"|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})"  # 03/14/1956, 14.03.56, 3-14-56
    rf"|\d{{1,2}}(?:st|nd|rd|th)?[\s-]+(?:of\s+)?{_MON}[\s,-]+(?:\d{{4}}|'?\d{{2}})"  # 14 March 1956, 14-Mar-56
    rf"|{_MON}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:\d{{4}}|'?\d{{2}})"  # March 14, 1956
    rf"|{_MON},?\s+\d{{4}}"  # March 1956
    r"|(?:19|20)\d{2}[01]\d[0-3]\d)(?!\d)"  # 19560314
)
DOB = re.compile(
    r"(?P<label>\b(?:D\.?\s?O\.?\s?B\b\.?|date\s+of\s+birth|birth\s*date|birthdate|birthday|born(?:\s+on)?)"
    r"(?:\s*(?:\([^()\n]{0,12}\))?\s*[:#=-]?\s*|\s+))"
    rf"(?P<value>{_ANY_DATE})",
    re.I,
)
DOB_COLUMNS = {"dob", "dateofbirth", "birthdate", "birthday", "patientbirthdate", "birthdt", "dtofbirth"}
OLD_AGE = re.compile(  # over 89: "90+" (HIPAA Safe Harbor)
    r"\b(?:9\d|1[0-2]\d)(?P<unit>[\s-]*(?:-?years?[\s-]*old|-?y/?o\b|yo\b|yrs?\b|-year\b))", re.I
)
LABELLED_OLD_AGE = re.compile(r"\b(?P<label>age[d]?\s*:?\s*)(?:9\d|1[0-2]\d)\b(?![.,]\d|\s*%)", re.I)
LABELLED_ID = re.compile(
    r"\b(?P<label>MRN|MR\s?#|MR\s?No\.?|medical\s+record(?:\s+(?:number|no\.?))?|patient\s+id|hospital\s+(?:number|no\.?)|"
    r"accession(?:\s+(?:number|no\.?|#))?|NHS\s+(?:number|no\.?)|SSN|social\s+security(?:\s+(?:number|no\.?))?|"
    r"case\s*(?:number|no\.?|#|id)|specimen\s*(?:number|no\.?|#|id)|encounter\s*(?:number|no\.?|id|#)|"
    r"visit\s*(?:number|no\.?|id|#)|account\s*(?:number|no\.?|#)|acct\.?|FIN|CSN|member\s+id|"
    r"(?:policy|insurance|licen[cs]e)\s*(?:number|no\.?|id|#)|NPI|DEA)"
    r"\s*[:#]?\s*(?P<value>(?=[A-Z-]*\d)[A-Z0-9][A-Z0-9-]{3,})",
    re.I,
)  # a value holds a digit
SPECIMEN_ID = re.compile(r"\b[A-Z]{1,3}-?\d{2}-\d{3,7}\b")  # surgical pathology numbers such as S21-12345
LONG_NUMBER = re.compile(r"\b\d{7,}\b")
SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
PHONE = re.compile(r"(?<!\d)(?:\+?\d{1,3}[\s.-])?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?!\d)")
INTL_PHONE = re.compile(r"(?<![\w+])\+\d{1,3}[\s.-]?(?:\(0\)\s?)?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}(?!\d)")
LABELLED_PHONE = re.compile(
    r"\b(?P<label>(?:tel|telephone|phone|mobile|cell|fax|pager|bleep|contact\s+(?:number|no\.?))\.?)"
    r"\s*[:#]?\s*(?P<value>\+?\(?\d[\d \t().-]{5,}\d)(?:\s*(?:ext\.?|x)\s*\d{1,5})?",
    re.I,
)
EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+", re.I)
IP_ADDRESS = re.compile(r"(?<!\d)(?<!\d\.)(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?!\d|\.\d)")
_STREET = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|Terr|Close|"
    r"Crescent|Cres|Square|Sq|Highway|Hwy|Parkway|Pkwy|Circle|Cir|Row|Mews|Gardens|Grove|Hill"
)
STREET_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?\s+(?:[A-Z][\w'’-]*\s+){{1,3}}(?:{_STREET})\b\.?"
    r"(?:,?\s*(?:Apt|Apartment|Unit|Suite|Ste|Flat|#)\.?\s*#?\w+)?"
)
PO_BOX = re.compile(r"\bP\.?\s?O\.?\s*Box\s+\d+\b", re.I)
LABELLED_ADDRESS = re.compile(
    r"\b(?P<label>(?:home\s+)?address|addr\.?|residence|resides\s+at)\s*:\s*(?P<value>[^\n;]+)", re.I
)
US_ZIP = re.compile(r"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)*,\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?\b")  # Boston, MA 02115
UK_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b")
_WORD = r"[A-ZÀ-Ý][^\W\d_]*(?:['’-][^\W\d_]+)*"  # a capitalised word, accents and hyphens included
_TITLES = r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Professor|Doctor|Sister|Nurse"
_CREDENTIALS = r"MD|M\.D\.|RN|NP|PA-C|PhD|MBBS|MBChB|FRCPath|FRCP|FRCS|FRCR"
_NAME = rf"(?!(?:{_TITLES})\b|P-[0-9a-f]{{16}}\b){_WORD}(?:,?[ \t](?!(?:{_CREDENTIALS})\b)(?:[A-Z]\.|{_WORD})){{0,3}}"  # "Jane Roe", "Roe, Jane", "Jane Q. Roe"
TITLED_NAME = re.compile(rf"\b(?P<title>(?:{_TITLES})\.?)\s+(?P<name>(?:[A-Z]\.\s*)*{_WORD}(?:\s+{_WORD})?)")
LABELLED_NAME = re.compile(
    r"(?P<label>(?<![^\n])[ \t]*(?i:name)\s*:\s*"  # "Name:" opening a line (not "Drug name:")
    r"|\b(?i:(?:patient|pt)(?:'s)?\s+name|(?:full|first|last|given|family)\s+name|surname|attending(?:\s+physician)?|"
    r"surgeon|pathologist|radiologist|oncologist|physician|provider|clinician|consultant|"
    r"(?:referring|ordering)(?:\s+(?:physician|provider|doctor|clinician))?|gp|"
    r"next\s+of\s+kin|emergency\s+contact|guardian|spouse|husband|wife|mother|father|daughter|son|cc)"
    r"\s*:\s*"
    r"|\b(?i:(?:electronically\s+)?signed(?:\s+electronically)?|dictated|transcribed|reported|verified|"
    r"reviewed|seen|examined|referred|accompanied)\s+by\s+)"
    rf"(?P<name>{_NAME})"
)
CREDENTIALED_NAME = re.compile(rf"(?P<name>\b{_WORD}(?:\s+[A-Z]\.)?\s+{_WORD}),?\s+(?P<cred>{_CREDENTIALS})\b")
PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")

LIMITS = (
    "Notes were scrubbed by patterns{ner}. This is not a guarantee that they are free of identifiers: "
    "a pattern removes the names known for each patient (DICOM headers, --names table), labelled numbers, "
    "7+ digit runs, phones, e-mails, URLs, street addresses, postcodes, titled, labelled and credentialed "
    "names, and dates of birth, and shifts other dates; it cannot recognise an unlabelled name it was not "
    "given (a relative, a colleague, a misspelling, a name in lower case), a place or an employer named in "
    "passing, dates written in words or with two-digit years (left as they are), rare diseases, unusual "
    "occupations, events or other unique phrases that identify a patient to someone who knows them, or "
    "identifiers in images or burned-in pixels. Review a sample of the notes before sharing OUT."
)


def limits(ner: bool = False) -> str:
    """What the notes scrubber cannot promise, naming the named-entity pass when it ran."""
    return LIMITS.format(ner=" and a presidio named-entity pass" if ner else " only (no named-entity model)")


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


def remove_birth_dates(text: str, counts: Counter | None = None) -> str:
    """Every date of birth in ``text`` (after DOB, date of birth, born on ...) replaced by ``[DOB]``."""
    text, n = DOB.subn(lambda m: f"{m.group('label')}[DOB]", text)
    if counts is not None:
        counts["dobs"] += n
    return text


def is_birth_date_column(name: str) -> bool:
    """Whether a table column holds dates of birth (dob, date_of_birth, BirthDate ...): removed, not shifted."""
    return re.sub(r"[^a-z]", "", str(name).lower()) in DOB_COLUMNS


# ------------------------------------------------------------------------------- optional: presidio NER

NER_ENV = "CLINICMM_DEID_NER"  # "0": never use presidio; "1": require it; unset: use it when it loads
NER_MODEL_ENV = "CLINICMM_PRESIDIO_MODEL"
NER_ENTITIES = (
    "PERSON",
    "LOCATION",
    "PHONE_NUMBER",
    "EMAIL_ADDRESS",
    "URL",
    "IP_ADDRESS",
    "US_SSN",
    "US_DRIVER_LICENSE",
    "US_PASSPORT",
    "MEDICAL_LICENSE",
    "UK_NHS",
    "IBAN_CODE",
    "CREDIT_CARD",
)  # not DATE_TIME: dates are shifted (birth dates removed) by the rules, so intervals hold
NER_PLACEHOLDER = {"PERSON": "[NAME]", "LOCATION": "[ADDRESS]", "PHONE_NUMBER": "[PHONE]", "EMAIL_ADDRESS": "[EMAIL]"}
EPONYMS = (  # disease and grading names a PERSON model takes for people; the words that carry the diagnosis
    "Hodgkin", "Hodgkin's", "Barrett", "Barrett's", "Gleason", "Breslow", "Clark", "Nottingham", "Bloom",
    "Richardson", "Ewing", "Ewing's", "Wilms", "Kaposi", "Merkel", "Paget", "Paget's", "Burkitt", "Lynch",
    "Li-Fraumeni", "Cowden", "Whipple", "Hurthle", "Hürthle", "Krukenberg", "Virchow", "Reed-Sternberg",
    "Waldenström", "Waldenstrom", "Sézary", "Sezary", "Bowen", "Bowen's", "Ki-67", "Papanicolaou", "Fuhrman",
    "Enneking", "Dukes", "Ann Arbor", "Masaoka", "Lauren", "Borrmann", "Bethesda",
)  # fmt: skip


class NerUnavailable(RuntimeError):
    """presidio (or its spaCy model) cannot be loaded: the reason says what to install."""


def presidio_analyzer(model: str | None = None):
    """A presidio ``AnalyzerEngine`` on an installed spaCy model (never downloading one); NerUnavailable else."""
    model = model or os.environ.get(NER_MODEL_ENV) or "en_core_web_lg"
    try:
        import spacy.util
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError as exc:
        raise NerUnavailable(
            f"presidio is not installed ({exc.name}): `pip install presidio-analyzer` and "
            f"`python -m spacy download {model}` to add the named-entity pass"
        ) from None
    if not spacy.util.is_package(model):
        raise NerUnavailable(
            f"the spaCy model {model!r} is not installed: `python -m spacy download {model}` (or set "
            f"${NER_MODEL_ENV} to an installed model)"
        )
    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    return AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=config).create_engine())


def ner_scrubber(analyzer, threshold: float = 0.5, allow: Iterable[str] = EPONYMS) -> Callable[[str, Counter], str]:
    """A pass over already rule-scrubbed text: every span ``analyzer`` (a presidio ``AnalyzerEngine``, or anything
    with its ``analyze(text=, language=, entities=, allow_list=)``) finds of :data:`NER_ENTITIES` with a score of at
    least ``threshold`` is replaced by its placeholder; spans inside a placeholder or a pseudonym are left alone."""
    allow = list(allow)

    def scrub_ner(text: str, counts: Counter) -> str:
        found = analyzer.analyze(text=text, language="en", entities=list(NER_ENTITIES), allow_list=allow)
        kept = [PLACEHOLDER, re.compile(r"\bP-[0-9a-f]{16}\b")]
        protected = [(m.start(), m.end()) for rx in kept for m in rx.finditer(text)]
        spans = sorted(
            (r.start, r.end, r.entity_type)
            for r in found
            if r.score >= threshold
            and r.entity_type in NER_ENTITIES
            and not any(a < r.end and r.start < b for a, b in protected)
        )
        merged: list[list] = []
        for start, end, kind in spans:  # overlapping findings become one span, the first one's placeholder
            if merged and start < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end, kind])
        for start, end, kind in reversed(merged):
            text = text[:start] + NER_PLACEHOLDER.get(kind, f"[{kind}]") + text[end:]
            counts["ner"] += 1
        return text

    return scrub_ner


def default_ner() -> Callable[[str, Counter], str] | None:
    """The named-entity pass ``clinicmm deidentify`` adds: presidio when it loads (``$CLINICMM_DEID_NER`` "0": never,
    "1": required, a clear error when it does not load), else None (the rules alone)."""
    wanted = os.environ.get(NER_ENV, "").strip()
    if wanted == "0":
        return None
    try:
        return ner_scrubber(presidio_analyzer())
    except NerUnavailable as exc:
        if wanted == "1":
            from clinicmm.errors import ConfigError

            raise ConfigError(f"${NER_ENV}=1 asks for the named-entity pass, but {exc}.") from None
        log.info("deidentify: notes scrubbed by patterns only; %s", exc)
        return None


# ------------------------------------------------------------------------------------------------ scrub


def scrub(
    text: str,
    days: int,
    names: Iterable[str] = (),
    ids: Iterable[str] = (),
    replace: dict[str, str] | None = None,
    counts: Counter | None = None,
    ner: Callable[[str, Counter], str] | None = None,
) -> str:
    """``text`` without the patient's known ``names`` and ``ids``, MRN-like numbers, contacts, addresses, titled,
    labelled and credentialed names and dates of birth; ``replace`` maps known strings (the patient's id) to their
    stand-in (the pseudonym); other dates shifted by ``days``; then ``ner`` (see :func:`ner_scrubber`) when given."""
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
    text = remove_birth_dates(text, counts)  # before the dates are shifted and the long numbers go
    text = sub(OLD_AGE, lambda m: f"90+{m.group('unit')}", "ages", text)
    text = sub(LABELLED_OLD_AGE, lambda m: f"{m.group('label')}90+", "ages", text)
    text = sub(EMAIL, "[EMAIL]", "contacts", text)
    text = sub(URL, "[URL]", "contacts", text)
    text = sub(LABELLED_ID, lambda m: f"{m.group('label')} [ID]", "ids", text)
    text = sub(SPECIMEN_ID, "[ID]", "ids", text)
    text = sub(SSN, "[ID]", "ids", text)
    text = sub(LABELLED_ADDRESS, lambda m: f"{m.group('label')}: [ADDRESS]", "addresses", text)
    text = sub(PO_BOX, "[ADDRESS]", "addresses", text)
    text = sub(STREET_ADDRESS, "[ADDRESS]", "addresses", text)
    text = sub(US_ZIP, "[ADDRESS]", "addresses", text)
    text = sub(UK_POSTCODE, "[ADDRESS]", "addresses", text)
    text = sub(IP_ADDRESS, "[IP]", "contacts", text)
    text = sub(LABELLED_PHONE, lambda m: f"{m.group('label')} [PHONE]", "contacts", text)
    text = sub(INTL_PHONE, "[PHONE]", "contacts", text)
    text = sub(PHONE, "[PHONE]", "contacts", text)
    text = shift_dates(text, days, counts)
    text = sub(LONG_NUMBER, "[ID]", "ids", text)
    text = sub(TITLED_NAME, lambda m: f"{m.group('title')} [NAME]", "names", text)
    text = sub(LABELLED_NAME, lambda m: f"{m.group('label')}[NAME]", "names", text)  # whole names, before parts
    text = sub(CREDENTIALED_NAME, lambda m: f"[NAME], {m.group('cred')}", "names", text)
    for name in sorted({n for n in names if len(n) >= 2}, key=len, reverse=True):
        text = sub(re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.I), "[NAME]", "names", text)
    return ner(text, counts) if ner is not None else text
