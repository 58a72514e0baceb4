"""What every test of de-identifying an omics dataset checks: no patient id is left in the output, and each
patient's omics come back the same under their pseudonym."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def deidentify_and_compare(data: Path, out: Path, key: bytes, patients: list[str]):
    """De-identify ``data/dataset.yaml`` into ``out`` with ``key``; assert that no id of ``patients`` is anywhere in
    ``out`` and that the cohort built from ``out`` has, per pseudonym, the expression matrix the original has per
    patient. Returns the de-identified cohort for further checks."""
    from clinicmm.config import load_dataset
    from clinicmm.ingest.cohort import build_cohort
    from clinicmm.privacy.deidentify import deidentify
    from clinicmm.privacy.pseudonym import pseudonym
    from clinicmm.privacy.scan import scan_tree

    deidentify(data / "dataset.yaml", out, key, progress=False)
    assert scan_tree([out], patients)["hits"] == []
    before = build_cohort(load_dataset(data / "dataset.yaml"), split=False)
    after = build_cohort(load_dataset(out / "dataset.yaml"), split=False)
    expected = before.expression.rename(index=lambda p: pseudonym(p, key))
    pd.testing.assert_frame_equal(after.expression.sort_index(), expected.sort_index(), check_like=True)
    return after
