"""compare/oof.parquet names each patient by its keyed pseudonym, never by the id, and still joins to the ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinicmm.evaluation.compare import CVData, CVResult, _write_oof
from clinicmm.privacy.pseudonym import pseudonym

KEY = b"k" * 32


def test_the_out_of_fold_table_holds_pseudonyms_that_map_back_to_the_ids(tmp_path):
    patients = ["MRN-80417733", "MRN-1002", "MRN-1003", "MRN-1004"]
    y = np.array([0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    res = CVResult(["BRCA", "LUAD"], y, np.array([0, 0, 1, 1]), {}, {"logreg": probs})
    data = CVData(None, np.arange(4), y, ["BRCA", "LUAD"], patients)
    _write_oof(res, data, tmp_path / "oof.parquet", KEY)
    raw = (tmp_path / "oof.parquet").read_bytes()
    assert b"MRN" not in raw and b"80417733" not in raw
    oof = pd.read_parquet(tmp_path / "oof.parquet")
    assert "patient_id" not in oof.columns
    ids = pd.DataFrame({"patient_id": patients, "pseudonym": [pseudonym(p, KEY) for p in patients]})
    joined = ids.merge(oof, on="pseudonym", validate="one_to_one")
    assert list(joined["patient_id"]) == patients and list(joined["label"]) == ["BRCA", "LUAD", "BRCA", "LUAD"]
    assert np.allclose(joined[["logreg.prob_BRCA", "logreg.prob_LUAD"]].to_numpy(), probs)


@pytest.mark.e2e
def test_compare_writes_the_oof_table_under_the_workflows_key(tmp_path, one_thread, genomics_cohort, genomics_workflow):
    from clinicmm.pipeline.run import compare
    from clinicmm.privacy.pseudonym import workflow_key

    genomics_cohort(tmp_path, 24)
    wf = genomics_workflow(tmp_path, "oof", ["omics"], compare={"folds": 2, "bootstrap": 100, "baselines": []})
    compare(wf, progress=False)  # ingest and encode first, then the folds
    oof = pd.read_parquet(wf.work / "compare" / "oof.parquet")
    ingest = pd.read_parquet(wf.work / "ingest" / "cohort.parquet")
    key = workflow_key(wf)
    expected = {pseudonym(p, key) for p in ingest.loc[ingest["label"].astype(bool), "patient_id"]}
    assert set(oof["pseudonym"]) <= expected and len(oof) == len(set(oof["pseudonym"])) > 0
    assert not set(ingest["patient_id"]) & set(oof["pseudonym"])
