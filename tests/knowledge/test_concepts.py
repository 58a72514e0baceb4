"""Tests of clinicmm.knowledge.concepts: concept linking with negation, hypothetical and family context."""

from __future__ import annotations

import pytest

from clinicmm.errors import InputError
from clinicmm.knowledge.concepts import Concept, ConceptMatcher, load_triggers, sentences
from clinicmm.knowledge.graph import KnowledgeGraph

ADENO = "histology:adenocarcinoma"
SCC = "histology:squamous cell carcinoma"
PAPILLARY = "histology:papillary carcinoma"


@pytest.fixture(scope="module")
def matcher() -> ConceptMatcher:
    return ConceptMatcher(KnowledgeGraph.default().concepts())


def _flags(matcher: ConceptMatcher, text: str) -> dict[str, tuple[bool, bool, bool]]:
    """concept id -> (negated, hypothetical, family) of its mentions (the test texts mention each once)."""
    return {m.concept_id: (m.negated, m.hypothetical, m.family) for m in matcher.find(text)}


ASSERTED, NEGATED, HYPOTHETICAL, FAMILY = (
    (False, False, False),
    (True, False, False),
    (False, True, False),
    (False, False, True),
)


def test_resection_diagnosis_is_positive(matcher):
    text = "Lung, right upper lobe, wedge resection: Invasive adenocarcinoma, acinar predominant."
    mentions = matcher.find(text)
    assert [(m.concept_id, m.text) for m in mentions if m.concept_id.startswith("site")] == [
        ("site:lung", "Lung"),
        ("site:lung", "right upper lobe"),
    ]
    adeno = next(m for m in mentions if m.concept_id == ADENO)
    assert text[adeno.start : adeno.end] == "adenocarcinoma" == adeno.text
    assert matcher.positive(text) == ["bodypart:chest", ADENO, "site:lung"]


@pytest.mark.parametrize(
    ("text", "concept"),
    [
        ("No evidence of squamous cell carcinoma.", SCC),
        ("Negative for malignancy.", "histology:malignancy"),
        ("Squamous differentiation is not identified.", SCC),
        ("Margins are free of carcinoma.", "histology:carcinoma"),
        ("Adenocarcinoma was excluded.", ADENO),
        ("Lymphoma: absent.", "histology:lymphoma"),
        ("Papillary carcinoma is not seen in the submitted sections.", PAPILLARY),
        ("Metastatic adenocarcinoma not identified.", ADENO),
        ("Lymph nodes with metastatic carcinoma, are identified: none.", "histology:carcinoma"),
        ("The patient denies any history of melanoma.", "histology:melanoma"),
    ],
)
def test_negated(matcher, text, concept):
    assert _flags(matcher, text)[concept] == NEGATED
    assert concept not in matcher.positive(text)


def test_biomarker_panel_negation_is_per_marker(matcher):
    text = "Tumor cells are positive for TTF-1 and napsin A, negative for p40."
    flags = _flags(matcher, text)
    assert flags["biomarker:ttf1"] == ASSERTED and flags["biomarker:napsina"] == ASSERTED
    assert flags["biomarker:p40"] == NEGATED
    assert matcher.positive(text) == ["biomarker:napsina", "biomarker:ttf1"]
    # the reverse order: 'positive for' ends the scope of 'negative for'
    assert _flags(matcher, "Negative for p40 and CK5/6, positive for TTF-1.") == {
        "biomarker:p40": NEGATED,
        "biomarker:ck56": NEGATED,
        "biomarker:ttf1": ASSERTED,
    }
    # post-position results in a stain table
    assert _flags(matcher, "TTF-1 positive, p40 negative.") == {"biomarker:ttf1": ASSERTED, "biomarker:p40": NEGATED}


def test_termination_ends_negation_scope(matcher):
    text = "No adenocarcinoma, but squamous cell carcinoma is present."
    assert _flags(matcher, text) == {ADENO: NEGATED, SCC: ASSERTED}
    assert _flags(matcher, "No papillary carcinoma; adenocarcinoma.") == {PAPILLARY: NEGATED, ADENO: ASSERTED}
    assert _flags(matcher, "Without lymphoma, however adenocarcinoma persists.")[ADENO] == ASSERTED


def test_negation_scope_covers_a_list_and_stops_at_sentence_end(matcher):
    text = "No adenocarcinoma, squamous cell carcinoma or lymphoma. Papillary carcinoma of the thyroid."
    flags = _flags(matcher, text)
    assert flags[ADENO] == flags[SCC] == flags["histology:lymphoma"] == NEGATED
    assert flags[PAPILLARY] == ASSERTED and flags["site:thyroid"] == ASSERTED
    # a new line is a new sentence ...
    assert _flags(matcher, "No lymphoma\nAdenocarcinoma present")[ADENO] == ASSERTED
    # ... unless the next line continues it in lower case (wrapped report text)
    assert _flags(matcher, "No evidence of lymphoma or\nadenocarcinoma.")[ADENO] == NEGATED


def test_family_history(matcher):
    text = "Family history of papillary thyroid carcinoma in mother."
    flags = _flags(matcher, text)
    assert flags[PAPILLARY] == flags["site:thyroid"] == flags["histology:carcinoma"] == FAMILY
    assert matcher.positive(text) == []
    assert _flags(matcher, "Breast carcinoma in her sister.")["site:breast"] == FAMILY
    assert _flags(matcher, "Father had colon cancer at age 70.")["site:colon"] == FAMILY


@pytest.mark.parametrize(
    ("text", "concept"),
    [
        ("Rule out lymphoma.", "histology:lymphoma"),
        ("R/O squamous cell carcinoma.", SCC),
        ("Suspicious for papillary carcinoma.", PAPILLARY),
        ("Possible adenocarcinoma.", ADENO),
        ("Adenocarcinoma cannot be excluded.", ADENO),
        ("Should melanoma develop, re-excision is advised.", "histology:melanoma"),
        ("If carcinoma is found, a lobectomy will follow.", "histology:carcinoma"),
        ("Differential diagnosis included lymphoma, which is not favored.", "histology:lymphoma"),
    ],
)
def test_hypothetical(matcher, text, concept):
    assert _flags(matcher, text)[concept] == HYPOTHETICAL
    assert matcher.positive(text) == []


def test_longest_match_wins(matcher):
    mentions = matcher.find("Invasive squamous cell carcinoma, keratinizing.")
    assert [(m.concept_id, m.text) for m in mentions] == [(SCC, "squamous cell carcinoma")]
    mentions = matcher.find("Thyroid transcription factor-1 is positive.")
    assert [m.concept_id for m in mentions] == ["biomarker:ttf1"]  # not also site:thyroid
    ids = [m.concept_id for m in matcher.find("Tumor of the left lower lobe.")]
    assert ids == ["site:lung"]  # 'left lower lobe', not the shorter 'lower lobe' twice


def test_synonyms_case_hyphens_and_plurals(matcher):
    assert matcher.positive("SCC, moderately differentiated.") == [SCC]
    assert matcher.positive("Squamous carcinoma.") == [SCC]
    assert matcher.positive("ADENOCA of the STOMACH") == ["bodypart:abdomen", ADENO, "site:stomach"]
    assert matcher.positive("gastric antrum biopsy") == ["site:stomach"]
    for text in ("TTF-1 +", "ttf1 +", "TTF 1 +", "Ttf-1 +"):
        assert matcher.positive(text) == ["biomarker:ttf1"], text
    assert matcher.positive("Napsin-A and CK5/6 stains") == ["biomarker:ck56", "biomarker:napsina"]
    assert matcher.positive("Multiple adenocarcinomas.") == [ADENO]
    assert matcher.positive("Papillary features throughout.") == [PAPILLARY]


def test_whole_words_only(matcher):
    assert matcher.find("Adenosquamous carcinoma.")[0].concept_id == "histology:carcinoma"
    assert [m.concept_id for m in matcher.find("Adenosquamous carcinoma.")] == ["histology:carcinoma"]
    assert matcher.find("The scapula and preliminary tests.") == []  # 'scc', 'pr' inside words do not count
    assert matcher.find("") == []


def test_shared_form_gives_one_mention_per_concept(matcher):
    mentions = matcher.find("Mass in the lung.")
    assert sorted(m.concept_id for m in mentions) == ["bodypart:chest", "site:lung"]
    assert len({(m.start, m.end) for m in mentions}) == 1


def test_sections_are_recorded(matcher):
    text = (
        "CLINICAL HISTORY: Rule out lymphoma.\n"
        "FINAL DIAGNOSIS:\n"
        "A. Lung, left lower lobe, biopsy: Squamous cell carcinoma.\n"
        "Comment: Negative for adenocarcinoma.\n"
        "FAMILY HISTORY: Melanoma."
    )
    by_id = {m.concept_id: m for m in matcher.find(text)}
    assert by_id["histology:lymphoma"].section == "clinical history" and by_id["histology:lymphoma"].hypothetical
    assert by_id[SCC].section == "final diagnosis" and not by_id[SCC].negated
    assert by_id[ADENO].section == "comment" and by_id[ADENO].negated
    assert by_id["histology:melanoma"].family  # a family-history section makes its mentions family mentions
    assert matcher.positive(text) == ["bodypart:chest", SCC, "site:lung"]
    assert matcher.find("Adenocarcinoma.")[0].section is None


def test_stain_results_are_not_section_headers():
    assert [s[2] for s in sentences("IMPRESSION: Mass.\nTTF-1: positive.\nER: negative.")] == [
        "impression",
        "impression",
        "impression",
    ]


def test_custom_concepts_and_triggers():
    concepts = [Concept("site:pancreas", "pancreas", "site", ("pancreatic",))]
    matcher = ConceptMatcher(concepts, triggers=[("nope", "negated", "pre"), ("maybe", "hypothetical", "post")])
    assert _flags(matcher, "Nope pancreatic mass.") == {"site:pancreas": NEGATED}
    assert _flags(matcher, "Pancreas maybe.") == {"site:pancreas": HYPOTHETICAL}
    assert _flags(matcher, "No pancreas.") == {"site:pancreas": ASSERTED}  # 'no' is not one of these triggers
    assert ConceptMatcher([]).find("No pancreas.") == []
    # characters whose lower case differs in length still map to the right concept
    assert [m.concept_id for m in matcher.find("PANCREATİC")] == ["site:pancreas"]


def test_trigger_file_errors_name_the_line(tmp_path):
    path = tmp_path / "triggers.tsv"
    path.write_text("phrase\tcategory\tdirection\n# comment\nnope\tnegated\tpre\nmaybe\tunsure\tpost\n")
    with pytest.raises(InputError, match="triggers.tsv, line 4: expected phrase"):
        load_triggers(path)
    path.write_text("phrase\tcategory\tdirection\nNope \tnegated\tpre\n")
    assert load_triggers(path) == [("nope", "negated", "pre")]
    assert ("no evidence of", "negated", "pre") in load_triggers()


# ------------------------------------------- sentences no one wrote for the demo generator (fixture file)


def _fixture_rows() -> list[tuple[str, str, str]]:
    from pathlib import Path

    lines = (Path(__file__).parent / "context_sentences.tsv").read_text(encoding="utf-8").splitlines()
    rows = [tuple(line.split("\t")) for line in lines if line and not line.startswith("#")]
    assert rows[0] == ("sentence", "concept", "expected")
    return rows[1:]


def _label(mention) -> str:
    return (
        "negated"
        if mention.negated
        else "hypothetical"
        if mention.hypothetical
        else "family"
        if mention.family
        else "asserted"
    )


@pytest.mark.parametrize(("sentence", "concept", "expected"), _fixture_rows())
def test_handwritten_context_sentences(matcher, sentence, concept, expected):
    mentions = [m for m in matcher.find(sentence) if m.concept_id == concept]
    assert mentions, f"{concept} not found in {sentence!r}"
    assert {_label(m) for m in mentions} == {expected}
    assert all(sentence[m.start : m.end] == m.text for m in mentions)  # spans point at the mention
    assert (concept in matcher.positive(sentence)) == (expected == "asserted")
