"""encode/evidence.json names patients by keyed pseudonym when the caller hands in the pseudonymiser; loading it
back needs the cohort's pseudonym -> id map, and a wrong key or another cohort is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from clinicmm.encode.featurizer import EncodedCohort
from clinicmm.errors import StageError
from clinicmm.privacy.pseudonym import pseudonym

KEY, OTHER = b"k" * 32, b"o" * 32
PATIENTS = ["MRN-80417733", "MRN-1002", "MRN-1003"]


def _encoded() -> EncodedCohort:
    vectors = {"image": np.arange(6, dtype=np.float32).reshape(3, 2), "note": np.full((3, 1), np.nan, np.float32)}
    links = {"image": [["lung"], [], ["breast"]], "note": [[], [], []]}
    failures = [{"patient_id": "MRN-1002", "modality": "image", "reason": "/data/MRN-1002/ct: not readable"}]
    return EncodedCohort(list(PATIENTS), vectors, links, failures, {"image": {"encoded": 2, "cached": 0, "failed": 1}})


def _ids(key: bytes, patients=PATIENTS) -> dict[str, str]:
    return {pseudonym(p, key): p for p in patients}


def test_evidence_json_holds_pseudonyms_and_loads_back_with_the_cohorts_ids(tmp_path):
    encoded = _encoded()
    encoded.save(tmp_path, pseudonymise=lambda p: pseudonym(p, KEY))
    raw = (tmp_path / "evidence.json").read_text()
    assert "MRN" not in raw and "80417733" not in raw and pseudonym("MRN-1002", KEY) in raw
    back = EncodedCohort.load(tmp_path, _ids(KEY, PATIENTS + ["MRN-9999"]))  # the cohort may hold more patients
    assert back.patients == PATIENTS and back.failures == encoded.failures and back.links == encoded.links
    assert np.array_equal(back.vectors["image"], encoded.vectors["image"])
    assert back.content_digest() == encoded.content_digest()


def test_a_pseudonymised_evidence_json_without_the_map_or_with_another_key_is_a_clear_error(tmp_path):
    _encoded().save(tmp_path, pseudonymise=lambda p: pseudonym(p, KEY))
    with pytest.raises(StageError, match="keyed pseudonym"):
        EncodedCohort.load(tmp_path)
    with pytest.raises(StageError, match="3 of 3 encoded patients are not in this cohort under this privacy key"):
        EncodedCohort.load(tmp_path, _ids(OTHER))
    with pytest.raises(StageError, match="1 of 3"):
        EncodedCohort.load(tmp_path, _ids(KEY, PATIENTS[:2]))


def test_without_a_pseudonymiser_evidence_json_is_written_and_read_as_before(tmp_path):
    encoded = _encoded()
    encoded.save(tmp_path)
    assert "MRN-1002" in (tmp_path / "evidence.json").read_text()
    assert EncodedCohort.load(tmp_path).patients == PATIENTS
