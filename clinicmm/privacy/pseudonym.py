"""Keyed pseudonyms, UIDs and date shifts of de-identification, all from one key.

The pseudonym and the key (:mod:`clinicmm.pseudo`, re-exported here) are shared with every stage; the UID
remapping and the per-patient date shift below use the same key under their own domain labels, so the same key
gives the same pseudonym, UID and date shift every time: runs, files and notes stay linked.
"""

from __future__ import annotations

from clinicmm.pseudo import (  # noqa: F401 -- the privacy package's names for them
    KEY_ENV,
    KEY_FILE,
    MIN_KEY_BYTES,
    PREFIX,
    digest,
    load_key,
    pseudonym,
    read_key_file,
    workflow_key,
)


def remap_uid(uid: str, key: bytes) -> str:
    """A new DICOM UID under the ``2.25`` (UUID-derived) root: same input UID and key, same output UID."""
    return "2.25." + str(int.from_bytes(digest(key, "uid", str(uid).strip())[:16], "big"))


def day_shift(patient_id: str, key: bytes, lo: int = 30, hi: int = 730) -> int:
    """Days (negative, between -hi and -lo) by which this patient's dates move; the same for all their files."""
    return -(lo + int.from_bytes(digest(key, "days", str(patient_id).strip())[:4], "big") % (hi - lo + 1))
