"""What a per-patient table keeps on its way to MLflow: pseudonyms, numbers and class columns only."""

import pandas as pd

from clinicmm.privacy.pseudonym import pseudonym, remap_uid
from clinicmm.privacy.tracking import safe_table

KEY = b"s" * 32


def test_ids_are_pseudonymised_and_free_text_columns_are_left_out():
    frame = pd.DataFrame(
        {
            "patient_id": ["MRN-001", "MRN-002"],
            "predicted": ["LUAD", ""],
            "prob_LUAD": [0.9, float("nan")],
            "set_size": [1, 0],
            "status": ["scored", "not scored"],
            "reason": ["", "/data/MRN-002/ct.dcm: truncated"],
            "note_excerpt": ["Mr. Doe ...", ""],
        }
    )
    out = safe_table(frame, KEY)
    assert list(out.columns) == ["patient_id", "predicted", "prob_LUAD", "set_size", "status"]
    assert out["patient_id"].tolist() == [pseudonym("MRN-001", KEY), pseudonym("MRN-002", KEY)]
    assert not out.astype(str).apply(lambda c: c.str.contains("MRN")).any().any()


def test_pseudonyms_and_uids_are_stable_per_key_and_differ_across_keys():
    assert pseudonym(" MRN-001 ", KEY) == pseudonym("MRN-001", KEY) and pseudonym("MRN-001", KEY).startswith("P-")
    assert pseudonym("MRN-001", KEY) != pseudonym("MRN-001", b"t" * 32) != pseudonym("MRN-002", KEY)
    uid = remap_uid("1.2.840.113619.2.1", KEY)
    assert uid == remap_uid("1.2.840.113619.2.1", KEY) and uid.startswith("2.25.") and len(uid) <= 64
