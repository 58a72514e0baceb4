"""Which workflow stages are up to date: a fingerprint per stage, written when the stage finishes.

A stage's fingerprint hashes its own configuration, what it reads (file sizes and modification times of the
user's inputs, for ingest) and the record of the stage before it: each finished stage's record carries a
``nonce``, a digest of what the stage produced. A change anywhere upstream, or an upstream stage that ran again
and produced something different, makes every later stage stale; one that ran again and produced the same
outputs (an encode served from the cache, say) leaves them current. ``workdir/<stage>/stage.json`` is written last and atomically: a stage killed half
way has no record and runs again, while the finished stages before it are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from clinicmm import __version__
from clinicmm.cache import atomic_write_bytes, digest_bytes
from clinicmm.config import WorkflowSpec, dump, load_dataset

log = logging.getLogger("clinicmm")

ORDER = ("ingest", "encode", "train", "evaluate", "register", "predict")


def _tree_listing(path: Path) -> list[str]:
    """(relative path, size, mtime) of every file under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        st = path.stat()
        return [f"{path.name}\t{st.st_size}\t{st.st_mtime_ns}"]
    out = []
    for root, _, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            st = p.stat()
            out.append(f"{p.relative_to(path)}\t{st.st_size}\t{st.st_mtime_ns}")
    return sorted(out)


def _inputs_digest(wf: WorkflowSpec) -> str:
    from clinicmm.config import _declared_paths

    spec = load_dataset(wf.dataset_path)
    parts = [wf.dataset_path.read_text(encoding="utf-8")]
    for key, path in _declared_paths(spec):
        parts += [key, *_tree_listing(spec.resolve(path))]
    return digest_bytes(*parts)


def _own_config(wf: WorkflowSpec, stage: str) -> object:
    c = dump(wf)
    return {
        "ingest": None,
        "encode": {"encoders": c["encoders"], "knowledge": [_tree_listing(wf.resolve(p)) for p in wf.knowledge]}
        | ({"text_adapter": _tree_listing(a)} if (a := wf.encoders.text.adapter_path) and a.exists() else {})
        | ({"image_weights": _tree_listing(w)} if (w := wf.encoders.image.weights_file()) and w.exists() else {}),
        "train": {k: c[k] for k in ("models", "primary_model", "training", "calibration")} | {"runs": [wf.tracking.tracking_uri(), wf.tracking.experiment]},
        "evaluate": None,
        "register": [wf.tracking.tracking_uri(), wf.tracking.registered_model, wf.tracking.alias],
        "predict": None,
    }[stage]


def nonce(wf: WorkflowSpec, stage: str) -> str:
    path = record_path(wf, stage)
    try:
        return json.loads(path.read_text())["nonce"] if path.is_file() else "missing"
    except (ValueError, KeyError):
        return "unreadable"


def fingerprint(wf: WorkflowSpec, stage: str) -> str:
    """The fingerprint ``stage`` would have if it ran now (chained to the record of the stage before it)."""
    i = ORDER.index(stage)
    upstream = nonce(wf, ORDER[i - 1]) if i > 0 else _inputs_digest(wf)
    extra = _inputs_digest(wf) if stage == "predict" else ""
    return digest_bytes(stage, __version__, upstream, extra, json.dumps(_own_config(wf, stage), sort_keys=True, default=str))


def record_path(wf: WorkflowSpec, stage: str) -> Path:
    return wf.work / stage / "stage.json"


def is_current(wf: WorkflowSpec, stage: str) -> bool:
    path = record_path(wf, stage)
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text())["fingerprint"] == fingerprint(wf, stage)
    except (ValueError, KeyError):
        return False


def mark_done(wf: WorkflowSpec, stage: str, summary: dict | None = None, content: str | None = None) -> None:
    """Record a finished stage; ``content`` is a digest of its outputs (default: a fresh random nonce)."""
    nonce = content or uuid.uuid4().hex
    record = {"stage": stage, "fingerprint": fingerprint(wf, stage), "nonce": nonce, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "summary": summary or {}}
    atomic_write_bytes(record_path(wf, stage), json.dumps(record, indent=1, default=str).encode())


def summary(wf: WorkflowSpec, stage: str) -> dict:
    path = record_path(wf, stage)
    return json.loads(path.read_text()).get("summary", {}) if path.is_file() else {}


def run_if_stale(name: str, configured: bool, current: Callable[[], bool], run: Callable[[], object],
                 force: bool = False) -> str:
    """For ``clinicmm run``: an optional step before encode (``train-image``, ``finetune-text``) runs when it is
    configured and its output is missing or out of date (``current()``); returns the status to print."""
    if not configured:
        return "not configured"
    if not force and current():
        log.info("%s: up to date, skipped", name)
        return "skipped (up to date)"
    run()
    return "ran"
