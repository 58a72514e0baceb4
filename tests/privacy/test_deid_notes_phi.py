"""Notes de-identification on realistic text: birth dates removed (never shifted), names, record numbers, contacts
and addresses gone, clinical content kept; the optional presidio pass and the report's notice of what it cannot
promise."""

from __future__ import annotations

import re
from collections import Counter
from types import SimpleNamespace

import pandas as pd
import pytest

from clinicmm.errors import ConfigError
from clinicmm.privacy import deid_notes
from clinicmm.privacy.deid_notes import limits, ner_scrubber, scrub
from clinicmm.privacy.pseudonym import day_shift, pseudonym

KEY = b"k" * 32
DAYS = -100

NOTE = """PATHOLOGY REPORT
Patient name: Agnes O'Malley-Dupont    MRN: A1234567    DOB: 02/11/1949
Address: 42 Elm Street, Apt 4B, Springfield, IL 62704
Home phone: (217) 555-0143; mobile +44 7700 900123; Fax: 217.555.0199; e-mail agnes.om@example.org
Portal https://portal.example.org/p/123 from workstation 10.2.33.41. SSN 123-45-6789.
Accession #: S21-04417. Encounter ID 55012. Referring physician: Jane Q. Roe
A 93-year-old woman. CT chest 2021-03-04: 3.2 x 2.1 cm spiculated RUL mass, SUV max 8.4.
EGFR L858R detected, KRAS G12D absent, PD-L1 TPS 50%, Ki-67 40%, CA 15-3 elevated. Stage IIIA (T2N2M0).
Drug name: Tamoxifen. Hodgkin lymphoma in 1999. Seen by Dr. K. Nakamura at 1200 Main St, Boston, MA 02115.
Electronically signed by Maria Gonzalez, MD on 03/06/2021.
"""
GONE = (
    "Agnes", "O'Malley", "Dupont", "A1234567", "1949", "02/11", "42 Elm", "Springfield", "62704", "555-0143",
    "7700 900123", "555.0199", "example.org", "10.2.33.41", "123-45-6789", "S21-04417", "55012", "Jane", "Roe",
    "93-year", "Nakamura", "1200 Main", "Boston", "02115", "Maria", "Gonzalez", "2021-03-04", "03/06/2021",
)  # fmt: skip
KEPT = (
    "3.2 x 2.1 cm spiculated RUL mass", "SUV max 8.4", "EGFR L858R detected", "KRAS G12D absent", "PD-L1 TPS 50%",
    "Ki-67 40%", "CA 15-3 elevated", "Stage IIIA (T2N2M0)", "Drug name: Tamoxifen", "Hodgkin lymphoma in 1999",
    "90+-year-old woman", "PATHOLOGY REPORT",
)  # fmt: skip


def test_a_realistic_note_loses_every_identifier_and_keeps_its_clinical_content():
    counts = Counter()
    out = scrub(NOTE, DAYS, counts=counts)
    assert [g for g in GONE if g.lower() in out.lower()] == [], out
    assert [k for k in KEPT if k not in out] == [], out
    assert "CT chest 2020-11-24:" in out and "on 11/26/2020" in out  # other dates shifted by DAYS, not removed
    assert "DOB: [DOB]" in out and out.count("[NAME]") >= 4 and out.count("[PHONE]") == 3
    assert counts["dobs"] == 1 and counts["addresses"] >= 3 and counts["ages"] == 1 and counts["dates_shifted"] == 2


@pytest.mark.parametrize(
    "text",
    [
        "DOB: 03/14/1956.",
        "DOB 3/14/56.",
        "D.O.B.: 14.03.1956.",
        "Date of birth (dd/mm/yyyy): 14/03/1956.",
        "date of birth 1956-03-14.",
        "Birth date: 14 March 1956.",
        "born on March 14, 1956.",
        "Born 14-Mar-1956.",
        "DOB=19560314.",
        "Birthdate: Mar 1956.",
    ],
)
def test_a_date_of_birth_in_any_format_is_removed_not_shifted(text):
    out = scrub(f"Patient seen. {text} Biopsy 2021-06-05.", DAYS)
    shifted = (pd.Timestamp("1956-03-14") + pd.Timedelta(days=DAYS)).strftime("%Y")  # 1955: a shifted DOB
    assert "[DOB]" in out and not re.search(r"\b(?:1956|56|14|03|1955|19560314)\b", out.split("Biopsy")[0]), out
    assert shifted not in out
    assert "Biopsy 2021-02-25." in out  # the other date of the note still moves by the patient's shift


def test_dates_that_are_not_birth_dates_keep_their_shift_and_ages_under_90_stay():
    out = scrub("Seen 2021-06-05 (a 67-year-old, aged 71 at recurrence), born in 1954.", DAYS)
    assert out == "Seen 2021-02-25 (a 67-year-old, aged 71 at recurrence), born in 1954."


def test_a_dob_column_of_a_notes_table_is_emptied_and_the_report_says_what_is_not_promised(tmp_path):
    from clinicmm.privacy.deidentify import deidentify

    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(
        {
            "patient_id": ["MRN-7", "MRN-8"],
            "date_of_birth": ["1949-02-11", "03/14/1956"],
            "note_date": ["2021-03-04", "2021-04-01"],
            "text": ["DOB 02/11/1949. Signed by Jane Roe, MD.", "Seen 2021-04-01, tel 617-555-0100."],
        }
    ).to_csv(data / "notes.csv", index=False)
    (data / "labels.csv").write_text("patient_id,cancer_type\nMRN-7,LUAD\nMRN-8,BRCA\n")
    (data / "dataset.yaml").write_text(
        "name: t\nlabels: {path: labels.csv}\nnotes: {path: notes.csv, date_column: note_date}\n"
    )
    result = deidentify(data / "dataset.yaml", tmp_path / "out", KEY, progress=False, ner=False)
    notes = pd.read_csv(tmp_path / "out" / "notes.csv", dtype=str, keep_default_na=False)
    assert list(notes["date_of_birth"]) == ["", ""]  # removed, not shifted
    moved = (pd.Timestamp("2021-03-04") + pd.Timedelta(days=day_shift("MRN-7", KEY))).strftime("%Y-%m-%d")
    assert notes.loc[0, "note_date"] == moved and notes.loc[0, "patient_id"] == pseudonym("MRN-7", KEY)
    assert notes.loc[0, "text"] == "DOB [DOB]. Signed by [NAME], MD."
    assert "617-555-0100" not in notes.loc[1, "text"] and "[PHONE]" in notes.loc[1, "text"]
    assert result["counts"]["dobs"] == 3 and result["counts"]["names"] == 1
    report = pd.read_csv(result["report"], keep_default_na=False)
    notice = report.iloc[0]
    assert notice["kind"] == "notice" and notice["reason"] == result["limits"] == limits(False)
    for plain in ("not a guarantee", "unique phrases", "rare diseases", "Review a sample"):
        assert plain in notice["reason"]
    assert (report["kind"] == "table").sum() == 2  # the notice is no table: the CLI's counts are unchanged
    assert "not a guarantee" in (tmp_path / "out" / "dataset.yaml").read_text()


# ------------------------------------------------------------------------------------- the presidio pass


class _Analyzer:
    """presidio's AnalyzerEngine.analyze, answering fixed spans (start, end, entity, score) found by a regex."""

    def __init__(self, found: list[tuple[str, str, float]]):
        self.found, self.calls = found, []

    def analyze(self, text, language, entities, allow_list):
        self.calls.append({"language": language, "entities": entities, "allow_list": allow_list})
        hits = []
        for needle, kind, score in self.found:
            for m in re.finditer(re.escape(needle), text):
                hits.append(SimpleNamespace(start=m.start(), end=m.end(), entity_type=kind, score=score))
        return hits


def test_the_ner_pass_replaces_what_the_analyzer_finds_above_its_threshold_and_spares_placeholders():
    pid = pseudonym("MRN-1", KEY)
    analyzer = _Analyzer(
        [
            ("Margaret", "PERSON", 0.85),
            ("Acme Mills", "LOCATION", 0.7),
            ("Acme", "ORGANIZATION", 0.9),  # not an entity the pass removes
            ("Hodgkin", "PERSON", 0.3),  # below the threshold
            ("[DOB]", "PERSON", 0.9),  # inside a placeholder of the rules
            (pid, "US_DRIVER_LICENSE", 0.9),  # the pseudonym the rules put in
            ("sister Margaret", "PERSON", 0.6),  # overlaps the first: one span
        ]
    )
    counts = Counter()
    text = f"Her sister Margaret drives her from Acme Mills. Hodgkin lymphoma. DOB [DOB]. Ref {pid}."
    out = ner_scrubber(analyzer)(text, counts)
    assert out == f"Her [NAME] drives her from [ADDRESS]. Hodgkin lymphoma. DOB [DOB]. Ref {pid}."
    assert counts["ner"] == 2
    call = analyzer.calls[0]
    assert "DATE_TIME" not in call["entities"] and "PERSON" in call["entities"] and "Gleason" in call["allow_list"]


def test_scrub_runs_the_ner_pass_after_the_rules():
    analyzer = _Analyzer([("Margaret", "PERSON", 0.9), ("DOB: [DOB]", "PERSON", 0.9)])
    text = "Her aunt Margaret; DOB: 01/02/1950; seen by Dr. Roe, Dr Lee and Sister Ann."
    assert "aunt Margaret;" in scrub(text, DAYS)  # the rules alone keep an unlabelled name
    out = scrub(text, DAYS, ner=ner_scrubber(analyzer))
    assert out == "Her aunt [NAME]; DOB: [DOB]; seen by Dr. [NAME], Dr [NAME] and Sister [NAME]."


def test_the_ner_pass_is_optional_and_a_clear_error_when_asked_for_but_missing(monkeypatch):
    from clinicmm.privacy.deidentify import notes_ner

    def missing(model=None):
        raise deid_notes.NerUnavailable(
            "presidio is not installed (presidio_analyzer): `pip install presidio-analyzer`"
        )

    monkeypatch.setattr(deid_notes, "presidio_analyzer", missing)
    monkeypatch.setattr("clinicmm.privacy.deidentify.presidio_analyzer", missing)
    monkeypatch.delenv(deid_notes.NER_ENV, raising=False)
    assert deid_notes.default_ner() is None and notes_ner(None) is None and notes_ner(False) is None
    with pytest.raises(ConfigError, match="pip install presidio-analyzer"):
        notes_ner(True)
    monkeypatch.setenv(deid_notes.NER_ENV, "1")
    with pytest.raises(ConfigError, match="CLINICMM_DEID_NER=1"):
        deid_notes.default_ner()
    monkeypatch.setenv(deid_notes.NER_ENV, "0")
    monkeypatch.setattr(deid_notes, "presidio_analyzer", lambda model=None: pytest.fail("must not load presidio"))
    assert deid_notes.default_ner() is None


def test_presidio_when_installed_removes_an_unlabelled_name_the_rules_miss():
    pytest.importorskip("presidio_analyzer")
    try:
        analyzer = deid_notes.presidio_analyzer()
    except deid_notes.NerUnavailable as exc:  # presidio without its spaCy model: the error names the fix
        assert "spacy download" in str(exc)
        with pytest.raises(ConfigError, match="spacy download"):
            from clinicmm.privacy.deidentify import notes_ner

            notes_ner(True)
        return
    text = "Her sister Margaret Thompson will drive her home. Gleason 4+3=7 adenocarcinoma."
    assert "Margaret" in scrub(text, DAYS)  # the rules alone miss an unlabelled name
    out = scrub(text, DAYS, ner=ner_scrubber(analyzer))
    assert "Margaret" not in out and "Thompson" not in out and "Gleason 4+3=7 adenocarcinoma" in out
