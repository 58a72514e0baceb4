"""Walk a data tree without trusting it: regular files only, links kept inside the dataset, every skip with a reason.

Every reader that lists a folder (the DICOM index, the notes folders, the stage fingerprint of the inputs) goes
through :func:`walk`, so they agree on what an input file is:

* a regular file (``stat.S_ISREG``) is an input; anything else -- a named pipe, a socket, a device -- is skipped
  **without being opened** (opening a FIFO blocks until a writer comes, so an ingest would hang forever);
* a symbolic link is followed only when it resolves inside one of the dataset's roots (the folders and files the
  dataset YAML names, and the YAML's own folder); one that leads elsewhere (``/etc/passwd``, another project) is
  refused, and its reason does not repeat where it points. :data:`FOLLOW_LINKS_OUTSIDE` turns that off;
* a link loop (``a -> b -> a``, a folder link to a folder that holds it) and a broken link are skipped with the
  reason, never an ``OSError``; a link to a file or folder under the tree being walked is skipped too, since
  what it points at is read where it lies (once, not twice);
* hidden entries (names starting with ``.``) are left out, as before: they are not inputs.

Reasons name the entry by its path relative to the walked root, made printable with :func:`printable` (a file
name that is not valid UTF-8 shows its bad bytes as ``\\xff``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

FOLLOW_LINKS_OUTSIDE = False  # follow symlinks whose target leaves the dataset's roots (the safe default: refuse)

_SPECIAL = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def printable(text: object) -> str:
    """``text`` with any undecodable file-name byte (a surrogate escape of ``os.fsdecode``) shown as ``\\xNN``.

    The result is valid UTF-8 (parquet, JSON, Markdown take it); for a name that was valid UTF-8 it is unchanged.
    """
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (e.g. from a JSON "\ud800")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def real_path(shown: str) -> str:
    """The path on disk that :func:`printable` showed as ``shown`` (its ``\\xNN`` back to the raw bytes).

    ``shown`` itself when it exists or no byte was escaped; a table's ``source`` column holds the printable form.
    """
    if "\\x" not in shown or os.path.lexists(shown):
        return shown
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), shown.encode("utf-8"))
    return os.fsdecode(raw)


def kind_of(mode: int) -> str | None:
    """What a special file is ('a named pipe (FIFO)', ...), or None for a regular file, folder or link."""
    return next((name for test, name in _SPECIAL if test(mode)), None)


@dataclass
class Walked:
    """The regular files found (absolute paths under the walked root, in walk order) and the entries skipped."""

    files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (absolute path, reason)


def real_roots(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The real (symlink-free) paths of the dataset's roots, for :func:`walk`'s ``roots``."""
    return sorted({os.path.realpath(p) for p in paths})


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def special_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` (a file the dataset names) cannot be read as a file, or None: never opens it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop; point the dataset YAML at the real file"
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    what = "a folder" if stat.S_ISDIR(mode) else kind_of(mode) or "not a regular file"
    return f"is {what}, not a regular file; point the dataset YAML at a data file"


def walk(
    root: str | os.PathLike[str],
    roots: Sequence[str | os.PathLike[str]] | None = None,
    follow_outside: bool = FOLLOW_LINKS_OUTSIDE,
    hidden: bool = False,
) -> Walked:
    """Every regular file under ``root`` (or ``root`` itself when it is a file), and every entry skipped, with why.

    ``roots``: the folders/files links may lead into (default: ``root`` itself); ``follow_outside`` follows any
    link that is no loop (fingerprints of model files, whose caches link elsewhere, use it); ``hidden`` includes
    names starting with ``.`` (the fingerprints do, as they always did). Folders are entered
    in name order and each folder's files come before its subfolders (``os.walk``'s order).
    """
    top = os.path.abspath(os.fspath(root))
    real_top = os.path.realpath(top)
    allowed = real_roots(roots if roots is not None else [top])
    out = Walked()
    try:
        top_mode = os.stat(top).st_mode
    except OSError as exc:
        out.skipped.append((top, _unreadable(exc)))
        return out
    if not stat.S_ISDIR(top_mode):
        reason = special_reason(top)
        (out.skipped.append((top, f"{printable(os.path.basename(top))} {reason}")) if reason else out.files.append(top))
        return out
    visited = {_key(os.stat(top))}
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                names = sorted(e.name for e in it if hidden or not e.name.startswith("."))
        except OSError as exc:
            out.skipped.append((folder, f"{_rel(folder, top)}: folder cannot be listed ({exc.strerror}); skipped"))
            continue
        subfolders = []
        for name in names:
            path = os.path.join(folder, name)
            kind, reason = _classify(path, top, real_top, allowed, follow_outside, visited)
            if kind == "file":
                out.files.append(path)
            elif kind == "dir":
                subfolders.append(path)
            else:
                out.skipped.append((path, f"{_rel(path, top)}: {reason}"))
        stack.extend(reversed(subfolders))
    return out


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _rel(path: str, top: str) -> str:
    return printable(os.path.relpath(path, top) if path != top else os.path.basename(top))


def _unreadable(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop (the link leads back to itself); skipped -- remove the link"
    return f"cannot be read ({exc.strerror}); skipped"


def _classify(
    path: str, top: str, real_top: str, allowed: list[str], follow_outside: bool, visited: set
) -> tuple[str, str]:
    """``('file' | 'dir' | 'skip', reason)`` of one entry; links and special files are never opened."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return "skip", _unreadable(exc)
    link = stat.S_ISLNK(st.st_mode)
    if link:
        try:
            st = os.stat(path)  # the target's type; ELOOP for a loop
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "skip", _unreadable(exc)
            return "skip", "a broken symbolic link (what it points at does not exist); skipped -- fix or remove it"
        real = os.path.realpath(path)
        if not follow_outside and not _inside(real, allowed):
            return "skip", (
                "a symbolic link that leads outside the dataset's folders; refused (links may only point inside the "
                "folders the dataset YAML names) -- copy the file into the dataset or remove the link"
            )
        if stat.S_ISDIR(st.st_mode) and _inside(real_top, [real]):
            return "skip", "a symbolic link loop (a link to a folder that holds it); skipped -- remove the link"
        if _inside(real, [real_top]):
            return "skip", (
                "a symbolic link to a file or folder under the same root; skipped, what it points at is read where "
                "it lies (once)"
            )
    if stat.S_ISDIR(st.st_mode):
        if _key(st) in visited:
            return "skip", "a folder reached a second time through links; skipped, it is read once"
        visited.add(_key(st))
        return "dir", ""
    if stat.S_ISREG(st.st_mode):
        return "file", ""
    what = kind_of(st.st_mode) or "not a regular file"
    target = " (the target of a symbolic link)" if link else ""
    return "skip", f"{what}{target}, not a regular file; skipped without opening it -- move it out of the data folder"
