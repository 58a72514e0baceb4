"""The stage registry: every stage of a workflow, in order, and whether each is up to date.

One mechanism for every stage, the optional ones included (``finetune-text`` and ``train-image`` run before
encode when the workflow configures them). A stage's **fingerprint** hashes its own settings and the record of the
stage it reads from (``after``): each finished stage's record carries a ``nonce``, a digest of what the stage
produced. A change anywhere upstream, or an upstream stage that ran again and produced something different, makes
every later stage stale; one that ran again and produced the same outputs (an encode served from the cache, say)
leaves them current. The user's inputs (the dataset YAML and every file it names) enter by **content**: a copied
or touched file with the same bytes changes nothing, an edited one makes ingest stale.

``workdir/<folder>/stage.json`` is the one record format: ``{stage, fingerprint, nonce, finished, summary}``, written
last and atomically, so a stage killed half way has no record and runs again while the finished ones are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clinicmm import __version__
from clinicmm.config import WorkflowSpec, declared_paths, dump, load_dataset
from clinicmm.files import atomic_write_bytes, digest_bytes, digest_files

log = logging.getLogger("clinicmm")


def _always(wf: WorkflowSpec) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One stage: its name (the CLI verb), its workdir folder, the stage whose record it reads, and its settings."""

    name: str
    folder: str
    after: str | None  # None: the dataset's inputs
    settings: Callable[[WorkflowSpec], object]
    enabled: Callable[[WorkflowSpec], bool] = _always
    optional: bool = False  # runs only when the workflow configures it
    outputs: Callable[[WorkflowSpec], list] = lambda wf: []  # files a current record also needs (weights, adapter)


# ------------------------------------------------------------------------------------------- content


def _file_digest(path: Path, memo: dict) -> str:
    """sha256 of a file's bytes; ``memo`` reuses it while (size, mtime, ctime, inode) are unchanged (ctime cannot be
    set back by a user, so edited bytes are always read again)."""
    st = path.stat()
    key, stamp = str(path), [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    known = memo.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    digest = digest_files([path])
    memo[key] = [stamp, digest]
    return digest


def tree_digest(path: Path, memo: dict | None = None, roots: list[Path] | None = None) -> list[str]:
    """(relative path, content digest) of every file under ``path`` (or of ``path`` itself), sorted.

    The tree is walked as ingest walks it (``ingest.walk``): special files (pipes, sockets) are never opened, a
    symbolic link loop or broken link never raises, and with ``roots`` (the dataset's folders) a link leading out
    of them is not read. Each such entry enters the digest as ``(relative path, skipped: reason)``, so adding or
    removing one still changes the fingerprint; without ``roots`` any link that is no loop is followed (model
    caches link their files elsewhere).
    """
    from clinicmm.ingest.walk import walk

    memo = {} if memo is None else memo
    path = Path(path)
    walked = walk(path, roots, follow_outside=roots is None, hidden=True)
    base = path if path.is_dir() else path.parent
    out = []
    for file in walked.files:
        try:
            out.append(f"{os.path.relpath(file, base)}\t{_file_digest(Path(file), memo)}")
        except OSError as exc:  # gone or unreadable since the walk
            out.append(f"{os.path.relpath(file, base)}\tskipped: unreadable ({exc.strerror})")
    out += [f"{os.path.relpath(p, base)}\tskipped: {reason}" for p, reason in walked.skipped]
    if walked.skipped:
        log.debug(
            "fingerprint of inputs: %d entries skipped (special files, link loops or links out of the data "
            "folders); the ingest report lists them",
            len(walked.skipped),
        )
    return sorted(out)


def _memo_path(wf: WorkflowSpec) -> Path:
    return wf.work / "ingest" / "input_digests.json"


def inputs_digest(wf: WorkflowSpec) -> str:
    """Digest of the dataset YAML and the content of every file it names (re-reading only files that changed)."""
    spec = load_dataset(wf.dataset_path)
    memo_file = _memo_path(wf)
    try:
        memo = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
    except ValueError:
        memo = {}
    parts = [wf.dataset_path.read_text(encoding="utf-8")]
    from clinicmm.ingest.cohort import dataset_roots

    roots = None if spec.follow_symlinks_outside else dataset_roots(spec)
    for key, path in declared_paths(spec):
        parts += [key, *tree_digest(spec.resolve(path), memo, roots)]
    if memo_file.parent.is_dir():
        atomic_write_bytes(memo_file, json.dumps(memo).encode())
    return digest_bytes(*parts)


# -------------------------------------------------------------------------------------------- stages


def _encode_settings(wf: WorkflowSpec) -> object:
    c = dump(wf)
    from clinicmm.encode.genomics import EVIDENCE_VERSION

    out = {"encoders": c["encoders"], "knowledge": [tree_digest(wf.resolve(p)) for p in wf.knowledge]}
    out["omics_evidence"] = EVIDENCE_VERSION
    if (a := wf.encoders.text.adapter_path) and Path(a).exists():
        out["text_adapter"] = tree_digest(Path(a))
    if (w := wf.encoders.image.weights_file()) and Path(w).exists():
        out["image_weights"] = tree_digest(Path(w))
    return out


def _train_image_settings(wf: WorkflowSpec) -> object:
    from clinicmm.encode.imaging.encoder import ImageEncoder
    from clinicmm.encode.imaging.train import base_spec

    train = wf.encoders.image.train
    return [
        train.model_dump_json(exclude={"output"}) if train else "",
        ImageEncoder(base_spec(wf.encoders.image)).fingerprint(),
    ]


def _finetune_text_settings(wf: WorkflowSpec) -> object:
    from clinicmm.encode.text.encoder import TextEncoder
    from clinicmm.encode.text.finetune import base_spec

    lora = wf.encoders.text.lora
    return [lora.model_dump_json() if lora else "", TextEncoder(base_spec(wf)).fingerprint()]


def _train_settings(wf: WorkflowSpec) -> object:
    c = dump(wf)
    return {k: c[k] for k in ("models", "training", "calibration")} | {
        "runs": [wf.tracking.tracking_uri(), wf.tracking.experiment]
    }


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("ingest", "ingest", None, lambda wf: None),
        Stage(
            "finetune-text",
            "finetune_text",
            "ingest",
            _finetune_text_settings,
            lambda wf: wf.encoders.text.lora is not None,
            True,
            lambda wf: [Path(wf.encoders.text.adapter_path) / "adapter_config.json"],
        ),
        Stage(
            "train-image",
            "train_image",
            "ingest",
            _train_image_settings,
            lambda wf: wf.encoders.image.train is not None,
            True,
            lambda wf: [Path(wf.encoders.image.weights_file())],
        ),
        Stage("encode", "encode", "ingest", _encode_settings),
        Stage("train", "train", "encode", _train_settings),
        Stage("evaluate", "evaluate", "train", lambda wf: None),
        Stage(
            "register",
            "register",
            "evaluate",
            lambda wf: [
                wf.tracking.tracking_uri(),
                wf.tracking.registered_model,
                wf.tracking.alias,
                wf.primary_model,
                [str(p) for p in wf.serving.data_roots],  # stored with the model: changing them re-registers
            ],
        ),
        Stage("predict", "predict", "register", lambda wf: None),
    )
}
ORDER = tuple(STAGES)


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"Expected a stage name among {', '.join(ORDER)} (got {name!r})") from None


def record_path(wf: WorkflowSpec, name: str) -> Path:
    return wf.work / stage(name).folder / "stage.json"


def _record(wf: WorkflowSpec, name: str) -> dict | None:
    path = record_path(wf, name)
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def nonce(wf: WorkflowSpec, name: str) -> str:
    record = _record(wf, name)
    return "missing" if record is None else str(record.get("nonce", "unreadable"))


def fingerprint(wf: WorkflowSpec, name: str) -> str:
    """The fingerprint stage ``name`` would have if it ran now (chained to the record of the stage it reads)."""
    s = stage(name)
    upstream = nonce(wf, s.after) if s.after else inputs_digest(wf)
    extra = inputs_digest(wf) if name == "predict" else ""  # predict scores the dataset's current files
    return digest_bytes(name, __version__, upstream, extra, json.dumps(s.settings(wf), sort_keys=True, default=str))


def is_current(wf: WorkflowSpec, name: str) -> bool:
    """True when stage ``name`` finished with the fingerprint it would have now and its outputs are all there."""
    record = _record(wf, name)
    if record is None or not all(Path(p).is_file() for p in stage(name).outputs(wf)):
        return False
    return record.get("fingerprint") == fingerprint(wf, name)


def mark_done(wf: WorkflowSpec, name: str, summary: dict | None = None, content: str | None = None) -> None:
    """Record a finished stage; ``content`` is a digest of its outputs (default: a fresh random nonce)."""
    record = {
        "stage": name,
        "fingerprint": fingerprint(wf, name),
        "nonce": content or uuid.uuid4().hex,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "summary": summary or {},
    }
    atomic_write_bytes(record_path(wf, name), json.dumps(record, indent=1, default=str).encode())


def summary(wf: WorkflowSpec, name: str) -> dict:
    record = _record(wf, name)
    return record.get("summary", {}) if record else {}
