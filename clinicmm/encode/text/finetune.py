"""LoRA fine-tuning of the note encoder (peft), in its own stage: ``clinicmm finetune-text WORKFLOW.yaml``.

What is learnt: LoRA adapters on the transformer's attention projections (``encoders.text.lora``), trained
together with a linear head that predicts the patient's label from the note's pooled vector (the masked mean
of the first window of each note, the same pooling the encoder uses). Only **train-split** notes are read, so
validation and test notes never shape the encoder. The head is thrown away; the adapter is written as a peft
folder (``adapter_config.json``, ``adapter_model.safetensors``) under ``workdir/finetune_text/adapter``, which
the encode stage merges into the model. The adapter's bytes join the text encoder's fingerprint, so the note
embeddings are recomputed (not read from the cache) after fine-tuning.

The stage registry (:mod:`clinicmm.pipeline.registry`) keeps the record (``workdir/finetune_text/stage.json``: the
losses, and a fingerprint of what the adapter was trained from: the ingest record, the LoRA settings and the base
text encoder); ``clinicmm run`` fine-tunes again only when that fingerprint changes.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clinicmm.config import WorkflowSpec
from clinicmm.errors import ConfigError, StageError
from clinicmm.keys import Split

log = logging.getLogger("clinicmm")
FOLDER = "finetune_text"


def base_spec(wf: WorkflowSpec):
    """The text encoder spec without the adapter: what the adapter is trained on top of."""
    return wf.encoders.text.model_copy(update={"adapter_path": None, "lora": None})


def training_notes(wf: WorkflowSpec) -> tuple[list[str], list[int], list[str]]:
    """Texts, label indices and class names of the train split's usable notes (at most ``lora.max_notes``)."""
    from clinicmm.ingest.cohort import Cohort, patient_inputs

    cohort = Cohort.load(wf.work / "ingest")  # StageError naming the folder when ingest has not run
    patients = cohort.patients(Split.TRAIN)
    label = cohort.manifest.set_index("patient_id")["label"].to_dict()
    pairs = [(t, label[p]) for p, ts in zip(patients, patient_inputs(cohort, patients)["texts"]) for t in ts]
    classes = sorted({lab for _, lab in pairs})
    if len(classes) < 2:
        raise StageError(
            f"{wf.dataset_path}: the train split has notes of {len(classes)} label(s); LoRA fine-tuning "
            "needs notes of at least two labels. Add notes or leave encoders.text.lora out."
        )
    lora = wf.encoders.text.lora
    if lora.max_notes is not None and len(pairs) > lora.max_notes:
        keep = np.random.default_rng(lora.seed).choice(len(pairs), lora.max_notes, replace=False)
        pairs = [pairs[i] for i in sorted(keep)]
    index = {c: i for i, c in enumerate(classes)}
    return [t for t, _ in pairs], [index[lab] for _, lab in pairs], classes


@dataclass
class TextAdapter:
    """What finetune-text produced: how many train notes and classes, the per-epoch loss, where the adapter is."""

    notes: int
    classes: int
    epoch_loss: list[float]
    adapter: str
    lora: dict


def finetune_text(wf: WorkflowSpec, progress: bool = True) -> TextAdapter:
    """Train the LoRA adapter on the train split's notes and write it; returns the record (losses, counts)."""
    lora = wf.encoders.text.lora
    if lora is None:
        raise ConfigError(
            f"{wf.name}: encoders.text.lora is not set; add it (e.g. `lora: {{r: 8, epochs: 2}}`) to "
            "fine-tune the text encoder."
        )
    texts, labels, classes = training_notes(wf)
    model, losses = _train(wf, texts, labels, len(classes), progress)
    adapter = Path(wf.encoders.text.adapter_path)
    tmp = adapter.with_name(f".{adapter.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    shutil.rmtree(adapter, ignore_errors=True)
    tmp.replace(adapter)
    record = TextAdapter(len(texts), len(classes), losses, str(adapter), lora.model_dump(mode="json"))
    log.info(
        "finetune-text: %d train notes, %d epochs, loss %.3f -> %.3f; adapter in %s",
        len(texts),
        len(losses),
        losses[0],
        losses[-1],
        adapter,
    )
    return record


def _train(wf: WorkflowSpec, texts: list[str], labels: list[int], n_classes: int, progress: bool):
    """LoRA + linear head, cross-entropy on each note's first window; returns the peft model and epoch losses."""
    import torch
    from tqdm.auto import tqdm

    from clinicmm.encode.text.encoder import TextEncoder
    from clinicmm.extras import require

    peft = require("peft")
    LoraConfig, get_peft_model = peft.LoraConfig, peft.get_peft_model

    lora, spec = wf.encoders.text.lora, wf.encoders.text
    torch.manual_seed(lora.seed)
    encoder = TextEncoder(base_spec(wf))
    tokenizer, base = encoder._load()
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules)
    try:
        model = get_peft_model(base, config)
    except ValueError as exc:
        raise ConfigError(
            f"encoders.text.lora.target_modules {lora.target_modules}: {exc}. Name linear layers of "
            f"the model in {encoder.path} (BERT: query, key, value, dense)."
        ) from None
    head = torch.nn.Linear(encoder.dim, n_classes)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lora.lr)
    rng, losses = np.random.default_rng(lora.seed), []
    model.train()
    steps = lora.epochs * -(-len(texts) // lora.batch_size)
    with tqdm(total=steps, desc="finetune-text", unit="batch", disable=None if progress else True) as bar:
        for _ in range(lora.epochs):
            order, total = rng.permutation(len(texts)), 0.0
            for start in range(0, len(texts), lora.batch_size):
                rows = order[start : start + lora.batch_size]
                batch = tokenizer(
                    [texts[i] for i in rows],
                    truncation=True,
                    max_length=spec.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                loss = torch.nn.functional.cross_entropy(head(pooled), torch.as_tensor([labels[i] for i in rows]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
                bar.update(1)
            losses.append(total / len(texts))
    return model.eval(), losses
