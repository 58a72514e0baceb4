"""A user's own transformers model folder works by workflow config alone (a tiny BERT built here, no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tiny_text_model import build_tiny_bert

from clinicmm.config import load_workflow
from clinicmm.encode.featurizer import Featurizer
from clinicmm.knowledge.graph import KnowledgeGraph

NOTES = [
    ["FINAL DIAGNOSIS: invasive adenocarcinoma of the right upper lobe.", "CT chest shows a mass."],
    ["Kidney biopsy: papillary renal cell carcinoma. No evidence of lymphoma."],
]


def test_own_model_folder_by_config(tmp_path: Path, one_thread) -> None:
    (tmp_path / "notes.csv").write_text("patient_id,text\nP1,Adenocarcinoma.\n", encoding="utf-8")
    dataset = tmp_path / "dataset.yaml"
    dataset.write_text("name: own\nnotes: {path: notes.csv}\n", encoding="utf-8")
    build_tiny_bert(tmp_path / "models" / "my_clinical_bert")
    workflow = tmp_path / "wf" / "workflow.yaml"
    workflow.parent.mkdir()
    workflow.write_text(
        f"name: own\ndataset: {dataset}\nworkdir: work\n"
        "encoders:\n  text: {model_path: ../models/my_clinical_bert, max_length: 32, stride: 4, batch_size: 2}\n"
    )
    wf = load_workflow(workflow)  # the folder is read relative to the workflow file, not the shell
    assert wf.encoders.text.model_path == (tmp_path / "models" / "my_clinical_bert").resolve()
    featurizer = Featurizer(wf.encoders, KnowledgeGraph.default(), cache_dir=tmp_path / "cache")
    vectors, concepts, info = featurizer.notes(NOTES)
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()
    assert info["stats"] == {"encoded": 3, "cached": 0, "failed": 0}
    assert "histology:adenocarcinoma" in concepts[0] and "histology:lymphoma" not in concepts[1]
    again = Featurizer(wf.encoders, KnowledgeGraph.default(), cache_dir=tmp_path / "cache").notes(NOTES)
    assert again[2]["stats"] == {"encoded": 0, "cached": 3, "failed": 0}
    np.testing.assert_array_equal(again[0], vectors)
