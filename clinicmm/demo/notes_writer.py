"""Synthetic clinical notes for the demo cohort: report-style text that reveals the histology only.

A pathology report is written for 70% of the patients; its FINAL DIAGNOSIS names the type's histology for 55%
of them, hedges it for 25% (a hypothetical mention: "suspicious for", "cannot be excluded") and omits it for 20%
("carcinoma, see comment"); its microscopy is typical of the histology half of the time. Radiology and consult
notes restate the histology 30% of the time. Biomarkers are shared within a histology group, so they add no finer
signal. Organ words (``CancerType.site_words``) appear for ~15% of patients only,
and genes never do, so notes alone separate adenocarcinoma / squamous / papillary and little else. Noise
includes traps a keyword matcher falls into: negated mentions of *another* histology, negated findings,
family history and rule-out phrases.
"""

from __future__ import annotations

import zlib

import numpy as np

from clinicmm.demo.design import HISTOLOGIES, CancerType
from clinicmm.demo.dicom_writer import date_str

SITE_RATE = 0.15  # share of patients whose notes name an organ word
OTHER_NEGATION_RATE = 0.30  # share with a negated mention of another histology
HYPOTHETICAL_RATE = 0.25  # share with a family-history / rule-out phrase
OTHER_MENTION_RATE = 0.3  # chance that a radiology / consult note restates the diagnosis
PATHOLOGY_RATE = 0.7  # share of patients with a pathology report
DIAGNOSIS_P = (0.55, 0.25, 0.20)  # FINAL DIAGNOSIS: names / hedges / omits the histology
TYPICAL_MICROSCOPY_RATE = 0.5  # the microscopy description is typical of the histology
GENERIC_MICROSCOPY = "Sections show an infiltrating malignant neoplasm with areas of necrosis."
HEDGED = (
    "carcinoma, suspicious for {h}",
    "poorly differentiated carcinoma; {h} cannot be excluded",
    "malignant neoplasm, rule out {h}",
)
OMITTED = ("carcinoma, see comment", "poorly differentiated carcinoma", "malignant neoplasm, further studies pending")

DIAGNOSES = {
    "adenocarcinoma": (
        "invasive adenocarcinoma, moderately differentiated",
        "adenocarcinoma, poorly differentiated",
        "invasive adenocarcinoma, well differentiated",
    ),
    "squamous cell carcinoma": (
        "squamous cell carcinoma, keratinizing",
        "invasive squamous cell carcinoma, moderately differentiated",
        "squamous cell carcinoma, non-keratinizing",
    ),
    "papillary carcinoma": (
        "papillary carcinoma",
        "papillary carcinoma, classic type",
        "papillary carcinoma with focal solid areas",
    ),
}
MICROSCOPY = {
    "adenocarcinoma": "Sections show infiltrating malignant glands with acinar and cribriform architecture.",
    "squamous cell carcinoma": "Sections show nests of atypical polygonal cells with intercellular bridges and keratin pearls.",
    "papillary carcinoma": "Sections show papillae with fibrovascular cores lined by atypical cuboidal cells.",
}
BIOMARKERS = {
    "adenocarcinoma": ("Tumor cells are CK7 positive.", "Mucicarmine stain highlights intracellular mucin."),
    "squamous cell carcinoma": ("Tumor cells are p40 positive.", "Tumor cells are CK5/6 positive."),
    "papillary carcinoma": ("Tumor cells are CK7 positive, AMACR positive.",),
}
NEGATED = {
    "adenocarcinoma": (
        "No glandular differentiation to suggest adenocarcinoma is identified.",
        "Negative for adenocarcinoma.",
    ),
    "squamous cell carcinoma": ("No squamous component is identified.", "Negative for squamous cell carcinoma."),
    "papillary carcinoma": ("Negative for papillary features.", "No papillary carcinoma is seen."),
}
PATHOLOGY_NOISE = (
    "Specimen received in formalin, labeled with the patient's name and medical record number.",
    "Sections were reviewed with a second pathologist who concurs.",
    "Margins are reported in the accompanying resection report.",
    "Additional levels were examined.",
    "Tissue is adequate for ancillary studies.",
    "Clinical correlation is recommended.",
)
CLINICAL_NOISE = (
    "The patient tolerated the procedure well.",
    "Clinical correlation is recommended.",
    "Performance status is ECOG 1.",
    "The patient denies fever, chills or night sweats.",
    "Follow-up imaging is planned in three months.",
    "The case was discussed at the multidisciplinary tumor board.",
    "Prior imaging is not available for comparison.",
    "Moderate weight loss over the last two months is reported.",
    "Medications were reconciled at this visit.",
    "Renal function and liver enzymes are within normal limits.",
    "The patient is a former smoker with a 20 pack-year history.",
)
NEGATED_FINDINGS = (
    "No evidence of lymphovascular invasion.",
    "Negative for distant metastasis.",
    "No perineural invasion is seen.",
)
HYPOTHETICAL = (
    "Family history of breast cancer in the mother.",
    "Rule out lymphoma.",
    "Father had colon cancer at age 70.",
    "Differential diagnosis included lymphoma, which is not favored.",
)


def _pick(rng: np.random.Generator, options: tuple[str, ...], k: int = 1) -> list[str]:
    idx = rng.choice(len(options), size=min(k, len(options)), replace=False)
    return [options[i] for i in sorted(idx)]


def _noise(rng: np.random.Generator, low: int = 1, high: int = 3, pool: tuple[str, ...] = CLINICAL_NOISE) -> str:
    return " ".join(_pick(rng, pool, int(rng.integers(low, high + 1))))


def _extras(ctype: CancerType, rng: np.random.Generator) -> dict[str, str]:
    """Per-patient optional sentences: an organ word, another histology negated, a hypothetical phrase."""
    extras = {"site": "", "other": "", "hypo": ""}
    if rng.random() < SITE_RATE:
        extras["site"] = f"Imaging showed a mass involving the {_pick(rng, ctype.site_words)[0]}."
    if rng.random() < OTHER_NEGATION_RATE:
        other = _pick(rng, tuple(h for h in HISTOLOGIES if h != ctype.histology))[0]
        extras["other"] = _pick(rng, NEGATED[other])[0]
    if rng.random() < HYPOTHETICAL_RATE:
        extras["hypo"] = _pick(rng, HYPOTHETICAL)[0]
    return extras


def _join(*sections: tuple[str, str]) -> str:
    return "\n".join(f"{head}: {' '.join(body.split())}" for head, body in sections)


def pathology_note(ctype: CancerType, rng: np.random.Generator, extras: dict[str, str]) -> str:
    """Pathology report whose FINAL DIAGNOSIS names, hedges or omits the histology."""
    h = ctype.histology
    how = int(rng.choice(3, p=DIAGNOSIS_P))
    diagnosis = (_pick(rng, DIAGNOSES[h])[0], _pick(rng, HEDGED)[0].format(h=h), _pick(rng, OMITTED)[0])[how]
    microscopy = MICROSCOPY[h] if rng.random() < TYPICAL_MICROSCOPY_RATE else GENERIC_MICROSCOPY
    return _join(
        ("CLINICAL HISTORY", f"Mass identified on imaging, biopsy requested. {extras['site']} {extras['hypo']}"),
        ("GROSS DESCRIPTION", extras["gross"]),
        (
            "MICROSCOPIC DESCRIPTION",
            f"{microscopy} {' '.join(_pick(rng, BIOMARKERS[h], 2))} {_noise(rng, 0, 2, PATHOLOGY_NOISE)}",
        ),
        (
            "FINAL DIAGNOSIS",
            f"{_pick(rng, ('Core needle biopsy', 'Biopsy, site as labeled', 'Resection'))[0]}: "
            f"{diagnosis}. {' '.join(_pick(rng, NEGATED_FINDINGS, 2))}",
        ),
        ("COMMENT", f"{extras['other']} {_noise(rng, 1, 2, PATHOLOGY_NOISE)}"),
    )


def radiology_note(ctype: CancerType, rng: np.random.Generator, extras: dict[str, str]) -> str:
    """CT report: a mass of some size, the diagnosis restated only sometimes."""
    restated = f"Findings compatible with the known {ctype.histology}." if rng.random() < OTHER_MENTION_RATE else ""
    return _join(
        ("CLINICAL HISTORY", f"Staging. {extras['hypo']}"),
        ("TECHNIQUE", f"CT with intravenous contrast, axial images. {extras['dose']}"),
        ("FINDINGS", f"There is an enhancing mass measuring {rng.uniform(1.2, 6.5):.1f} cm. {_noise(rng)}"),
        ("IMPRESSION", f"Mass as described. {restated} Negative for distant metastasis."),
    )


def consult_note(ctype: CancerType, rng: np.random.Generator, extras: dict[str, str]) -> str:
    """Oncology consult: history, assessment and plan; the diagnosis named only sometimes."""
    named = f"biopsy-proven {ctype.histology}" if rng.random() < OTHER_MENTION_RATE else "a newly diagnosed malignancy"
    return _join(
        ("CLINICAL HISTORY", f"Referred for management of {named}. {extras['site']} {extras['hypo']} {_noise(rng)}"),
        ("IMPRESSION", f"Localized disease on current staging. {extras['other']}"),
        ("PLAN", f"Treatment options discussed with the patient. {_noise(rng, 1, 2)} {extras['vitals']}"),
    )


def patient_notes(patient_id: str, ctype: CancerType, day: int, rng: np.random.Generator) -> list[dict[str, str]]:
    """1–3 notes (rows of notes.csv): radiology, pathology and consult notes, each by chance (at least one)."""
    extras = _extras(ctype, rng) | _details(patient_id)
    radiology, pathology, consult = rng.random(3) < (0.6, PATHOLOGY_RATE, 0.5)
    kinds = [("radiology", -7, radiology_note)] if radiology else []
    if pathology:
        kinds.append(("pathology", 0, pathology_note))
    if consult or not kinds:
        kinds.append(("oncology consult", 14, consult_note))
    return [
        {
            "note_id": f"{patient_id}-N{i}",
            "patient_id": patient_id,
            "note_type": kind,
            "note_date": _iso(day + shift),
            "text": writer(ctype, rng, extras),
        }
        for i, (kind, shift, writer) in enumerate(kinds, start=1)
    ]


def _details(patient_id: str) -> dict[str, str]:
    """Patient-specific measurements, so no two patients' notes are the same text (a real cohort's never are, and
    the leakage check refuses identical notes across splits). Drawn from the patient id, not from the shared
    generator, so every other part of the demo stays as it was."""
    rng = np.random.default_rng(zlib.crc32(patient_id.encode()))
    cores, length = int(rng.integers(2, 7)), rng.uniform(0.6, 2.4)
    weight, ecog, dlp = rng.uniform(48, 112), int(rng.integers(0, 3)), rng.uniform(180, 900)
    return {
        "gross": f"Received {cores} tan-white cores, the longest {length:.1f} cm, entirely submitted.",
        "vitals": f"Weight {weight:.1f} kg, ECOG performance status {ecog}.",
        "dose": f"Dose-length product {dlp:.0f} mGy-cm.",
    }


def _iso(day: int) -> str:
    d = date_str(day)
    return f"{d[:4]}-{d[4:6]}-{d[6:]}"
