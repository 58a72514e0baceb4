"""Keyed pseudonyms: a patient id becomes ``P-`` + 16 hex digits of HMAC-SHA256(key, id).

Why keyed: a plain hash of an MRN can be reversed by hashing every possible MRN; without the key it cannot.
The key lives with the hospital, never under the MLflow store: the workflow's ``privacy.key_file``, else
``$CLINICMM_PHI_KEY`` (the key itself), else a random key written once to ``workdir/privacy.key`` (mode 600). The
same key gives the same pseudonym every time, so runs and files stay linked and the hospital can map a pseudonym
back by hashing its own ids.

A shared contract at the bottom of the package (like :mod:`clinicmm.files`), so that every stage can name
patients by pseudonym in what it writes; :mod:`clinicmm.privacy.pseudonym` adds the UID and date-shift rules of
de-identification on the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from clinicmm.errors import ConfigError

KEY_ENV = "CLINICMM_PHI_KEY"
KEY_FILE = "privacy.key"
MIN_KEY_BYTES = 16
PREFIX = "P-"


def digest(key: bytes, domain: str, value: str) -> bytes:
    """HMAC-SHA256 with a domain label, so a pseudonym, a UID and a date shift never share a digest."""
    return hmac.new(key, f"{domain}\0{value}".encode(), hashlib.sha256).digest()


def pseudonym(patient_id: str, key: bytes, length: int = 16) -> str:
    """``P-`` + ``length`` hex digits of the keyed hash of ``patient_id`` (64 bits by default)."""
    return PREFIX + digest(key, "patient", str(patient_id).strip()).hex()[:length]


def naming(key: bytes, patients) -> tuple[Callable[[str], str], dict[str, str]]:
    """``(id -> pseudonym, {pseudonym: id} of patients)`` under ``key``: what a stage that writes patients by
    pseudonym, and the one that reads them back, need."""
    return (lambda p: pseudonym(p, key)), {pseudonym(p, key): str(p) for p in patients}


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths resolved against the working directory)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :]).resolve()


# ------------------------------------------------------------------------------------------------- key


def read_key_file(path: Path) -> bytes:
    """The key in ``path`` (its text, stripped); at least 16 bytes."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: privacy key file not found. Create it (e.g. `openssl rand -hex 32 > {path}`) or set ${KEY_ENV}."
        )
    return _check(path.read_bytes().strip(), str(path))


def _check(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where}: the privacy key is {len(key)} bytes; use at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)."
        )
    return key


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder.resolve())


def load_key(key_file: Path | None = None, fallback: Path | None = None, forbidden: Path | None = None) -> bytes:
    """The pseudonym key: ``key_file``, else ``$CLINICMM_PHI_KEY``, else ``fallback`` (created once, mode 600).

    ``forbidden`` is the folder of the MLflow store: a key file inside it would travel with the runs it protects.
    """
    if key_file is None and os.environ.get(KEY_ENV):
        return _check(os.environ[KEY_ENV].strip().encode(), f"${KEY_ENV}")
    path = key_file or fallback
    if path is None:
        raise ConfigError(f"no privacy key: set ${KEY_ENV} or privacy.key_file in the workflow.")
    if _inside(Path(path), forbidden):
        raise ConfigError(
            f"{path}: the privacy key file lies inside the MLflow store ({forbidden}); move it "
            f"outside (it must never be logged with the runs) or set ${KEY_ENV}."
        )
    if key_file is None and not Path(path).exists():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    return read_key_file(Path(path))


def workflow_key(wf) -> bytes:
    """The key of a workflow: ``privacy.key_file``, else env, else ``workdir/privacy.key`` (never under the store)."""
    db = sqlite_path(wf.tracking.tracking_uri())
    spec = getattr(wf, "privacy", None)
    key_file = wf.resolve(spec.key_file) if spec is not None and spec.key_file is not None else None
    return load_key(key_file, wf.work / KEY_FILE, db.parent if db is not None else None)
