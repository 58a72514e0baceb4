"""Scan a folder (an MLflow store, a model's artifacts) for identifying strings or pickled objects.

``scan_tree`` reads every file as bytes (the sqlite database and its journal included; parquet tables and zips
decoded), so a value that reached a param, a tag, a metric name or an artifact is found wherever MLflow put it.
Text drawn into a plot's pixels is beyond a byte scan: plots are built from counts and metrics only. ``find_pickles`` flags any file that
would run code when loaded: a pickle stream, a pickle-backed format by its suffix, or a zip (torch ``.pt``)
holding a ``.pkl`` member.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".cloudpickle", ".dill")


def _files(root: Path) -> Iterable[Path]:
    return (p for p in sorted(Path(root).rglob("*")) if p.is_file() and not p.is_symlink())


def _contents(path: Path) -> bytes:
    """The file's bytes, plus the decoded cells of a (compressed) parquet table and the members of a zip."""
    data = path.read_bytes()
    if path.suffix.lower() == ".parquet":
        import pandas as pd

        try:
            data += pd.read_parquet(path).to_csv(index=True).encode()
        except Exception:  # unreadable parquet: the raw bytes are still scanned
            pass
    elif data.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            data += b"".join(zf.read(n) for n in zf.namelist())
    return data


def _variants(needle: str) -> list[bytes]:
    """A needle as UTF-8 and UTF-16-LE (how some DICOM and Windows tools store text), lower-cased."""
    low = needle.lower()
    return [low.encode("utf-8"), low.encode("utf-16-le")]


def scan_tree(roots: Iterable[Path], needles: Iterable[str], texts: Iterable[str] = ()) -> dict:
    """Every occurrence of every needle (case-insensitive) in the files under ``roots`` and in ``texts``.

    Returns ``{"files": n_scanned, "bytes": total, "hits": [{"needle", "where"}]}``.
    """
    needles = [n for n in needles if n]
    hits, n_files, n_bytes = [], 0, 0
    for root in roots:
        for path in _files(root):
            data = _contents(path).lower()
            n_files, n_bytes = n_files + 1, n_bytes + len(data)
            hits += [{"needle": n, "where": str(path)} for n in needles if any(v in data for v in _variants(n))]
    for i, text in enumerate(texts):
        low = text.lower()
        hits += [{"needle": n, "where": f"text #{i}"} for n in needles if n.lower() in low]
    return {"files": n_files, "bytes": n_bytes, "hits": hits}


def _is_pickle_stream(head: bytes) -> bool:
    """Protocol 2+ pickles start with PROTO (0x80) and the protocol number."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def find_pickles(root: Path) -> list[Path]:
    """Files under ``root`` that would unpickle (run code) when loaded."""
    found = []
    for path in _files(root):
        with path.open("rb") as fh:
            head = fh.read(4)
        if path.suffix.lower() in PICKLE_SUFFIXES or _is_pickle_stream(head):
            found.append(path)
        elif head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if any(n.endswith((".pkl", ".pickle")) for n in zf.namelist()):
                    found.append(path)
    return found
