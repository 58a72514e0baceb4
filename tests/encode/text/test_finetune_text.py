"""Tests of clinicmm.encode.text.finetune: LoRA fine-tuning of a tiny local BERT in its own stage and CLI verb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_text_model import build_tiny_bert
from typer.testing import CliRunner

from clinicmm.config import load_workflow
from clinicmm.encode.text.encoder import TextEncoder

NOTES = {
    "LUAD": "FINAL DIAGNOSIS: invasive adenocarcinoma of the right upper lobe, ttf-1 positive.",
    "KIRP": "FINAL DIAGNOSIS: papillary renal cell carcinoma of the left kidney.",
}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ft")
    build_tiny_bert(root / "tiny")
    labels, notes = ["patient_id,cancer_type"], ["patient_id,text"]
    for i in range(16):
        label = "LUAD" if i % 2 else "KIRP"
        labels.append(f"P{i:02d},{label}")
        notes += [f'P{i:02d},"{NOTES[label]} Case {i}."', f'P{i:02d},"CT chest shows a mass. Case {i}."']
    (root / "labels.csv").write_text("\n".join(labels) + "\n")
    (root / "notes.csv").write_text("\n".join(notes) + "\n")
    (root / "dataset.yaml").write_text("name: ft\nlabels: {path: labels.csv}\nnotes: {path: notes.csv}\n")
    (root / "wf.yaml").write_text(
        "name: ft\ndataset: dataset.yaml\nworkdir: work\n"
        "encoders:\n  text:\n    model_path: tiny\n    max_length: 32\n    stride: 4\n"
        "    lora: {r: 4, alpha: 8, epochs: 2, lr: 0.01, batch_size: 4}\n"
    )
    return root / "wf.yaml"


def test_finetune_writes_an_adapter_that_changes_the_encoder(workflow: Path, one_thread) -> None:
    from clinicmm.cli import app
    from clinicmm.pipeline import registry as stages
    from clinicmm.pipeline.run import run_stage
    from clinicmm.pipeline.stages import encode_stage, ingest_stage

    wf = load_workflow(workflow)
    assert wf.encoders.text.adapter_path == wf.work / "finetune_text" / "adapter"
    ingest_stage(wf)
    assert not stages.is_current(wf, "finetune-text")
    encode_before = stages.fingerprint(wf, "encode")
    with pytest.raises(Exception, match="finetune-text"):
        TextEncoder(wf.encoders.text)  # no adapter yet: the message says how to make one
    result = CliRunner().invoke(app, ["finetune-text", str(workflow), "--no-progress"])
    assert result.exit_code == 0, result.output
    adapter = wf.encoders.text.adapter_path
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    record = stages.summary(wf, "finetune-text")  # the stage registry's one record format
    assert record["classes"] == 2 and 0 < record["notes"] < 32  # train split only (val/test notes left out)
    assert len(record["epoch_loss"]) == 2

    tuned = TextEncoder(wf.encoders.text)
    base = TextEncoder(wf.encoders.text.model_copy(update={"adapter_path": None, "lora": None}))
    assert tuned.fingerprint() != base.fingerprint()  # a new cache key: embeddings are recomputed
    texts = list(NOTES.values())
    assert not np.allclose(tuned.encode(texts, progress=False), base.encode(texts, progress=False), atol=1e-5)

    assert stages.is_current(wf, "finetune-text") and run_stage(wf, "finetune-text") == "skipped (up to date)"
    assert stages.fingerprint(wf, "encode") != encode_before  # a new adapter makes the encode stage stale
    encoded = encode_stage(wf)  # the encode stage reads the adapter: every note encoded anew, none from cache
    assert encoded.stats["note"] == {"encoded": 32, "cached": 0, "failed": 0}
    used = json.loads((wf.work / "encode" / "encoders.json").read_text())["fingerprints"]
    assert used["note"] == tuned.fingerprint()
    again = TextEncoder(wf.encoders.text)
    np.testing.assert_array_equal(again.encode(texts, progress=False), tuned.encode(texts, progress=False))


def test_finetune_without_lora_is_a_config_error(tmp_path: Path, workflow: Path) -> None:
    from clinicmm.cli import app

    plain = tmp_path / "plain.yaml"
    plain.write_text(f"name: plain\ndataset: {workflow.parent / 'dataset.yaml'}\nworkdir: work\n")
    result = CliRunner().invoke(app, ["finetune-text", str(plain)])
    assert result.exit_code == 1 and "encoders.text.lora" in result.output
