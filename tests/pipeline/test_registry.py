"""The ingest record's digest covers what ingest wrote, so the stages after it see a changed input."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from clinicmm.config import WorkflowSpec
from clinicmm.pipeline import registry as stages
from clinicmm.pipeline.stages import ingest_stage


def _nonce(wf) -> str:
    return json.loads(stages.record_path(wf, "ingest").read_text())["nonce"]


def test_a_changed_note_text_changes_the_ingest_digest_and_a_rerun_does_not(small_demo, tmp_path):
    data = tmp_path / "cohort"
    shutil.copytree(small_demo[0].parent, data)
    wf = WorkflowSpec(name="records", dataset=data / "dataset.yaml", workdir=tmp_path / "work")
    ingest_stage(wf)
    first = _nonce(wf)
    ingest_stage(wf)
    assert _nonce(wf) == first  # same inputs, same tables: encode stays up to date
    notes = pd.read_csv(data / "notes.csv", dtype=str, keep_default_na=False)
    notes.loc[notes["text"].str.len() > 0, "text"] = notes["text"] + " Addendum: margins reviewed."
    notes.to_csv(data / "notes.csv", index=False)
    ingest_stage(wf)
    assert _nonce(wf) != first  # the manifest and report are the same, the notes are not
