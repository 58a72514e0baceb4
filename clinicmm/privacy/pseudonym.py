"""Keyed pseudonyms: a patient id becomes ``P-`` + 16 hex digits of HMAC-SHA256(key, id).

Why keyed: a plain hash of an MRN can be reversed by hashing every possible MRN; without the key it cannot.
The key lives with the hospital, never under the MLflow store: the workflow's ``privacy.key_file``, else
``$CLINICMM_PHI_KEY`` (the key itself), else a random key written once to ``workdir/privacy.key`` (mode 600). The
same key gives the same pseudonym, UID and date shift every time, so runs, files and notes stay linked and the
hospital can map a pseudonym back by hashing its own ids.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from clinicmm.errors import ConfigError

KEY_ENV = "CLINICMM_PHI_KEY"
KEY_FILE = "privacy.key"
MIN_KEY_BYTES = 16
PREFIX = "P-"


def _digest(key: bytes, domain: str, value: str) -> bytes:
    """HMAC-SHA256 with a domain label, so a pseudonym, a UID and a date shift never share a digest."""
    return hmac.new(key, f"{domain}\0{value}".encode(), hashlib.sha256).digest()


def pseudonym(patient_id: str, key: bytes, length: int = 16) -> str:
    """``P-`` + ``length`` hex digits of the keyed hash of ``patient_id`` (64 bits by default)."""
    return PREFIX + _digest(key, "patient", str(patient_id).strip()).hex()[:length]


def remap_uid(uid: str, key: bytes) -> str:
    """A new DICOM UID under the ``2.25`` (UUID-derived) root: same input UID and key, same output UID."""
    return "2.25." + str(int.from_bytes(_digest(key, "uid", str(uid).strip())[:16], "big"))


def day_shift(patient_id: str, key: bytes, lo: int = 30, hi: int = 730) -> int:
    """Days (negative, between -hi and -lo) by which this patient's dates move; the same for all their files."""
    return -(lo + int.from_bytes(_digest(key, "days", str(patient_id).strip())[:4], "big") % (hi - lo + 1))


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
    from clinicmm.tracking.setup import sqlite_path

    db = sqlite_path(wf.tracking.tracking_uri())
    spec = getattr(wf, "privacy", None)
    key_file = wf.resolve(spec.key_file) if spec is not None and spec.key_file is not None else None
    return load_key(key_file, wf.work / KEY_FILE, db.parent if db is not None else None)
