"""The one exception family of clinicmm.

Every message says what went wrong, where (file, row, column, DICOM tag) and how to fix it. The CLI prints
``ClinicmmError`` as one line and exits non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations


class ClinicmmError(Exception):
    """Base class of every error clinicmm raises on purpose."""


class ConfigError(ClinicmmError):
    """A dataset or workflow YAML is missing, malformed or names something that does not exist."""


class InputError(ClinicmmError):
    """A user's data file cannot be used as it is (bad DICOM, unreadable table, missing column ...)."""


class StageError(ClinicmmError):
    """A workflow stage cannot run because an earlier stage's outputs are missing or stale."""


class ModelError(ClinicmmError):
    """A model cannot be built, loaded or applied (unknown name, bad artifact, incompatible input)."""


def where(path: object, row: int | None = None, column: str | None = None, tag: str | None = None) -> str:
    """Format a location for an error message: ``file.csv, row 12, column 'text'``."""
    parts = [str(path)]
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column {column!r}")
    if tag is not None:
        parts.append(f"tag {tag}")
    return ", ".join(parts)
