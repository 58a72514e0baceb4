"""Score patients given as a DataFrame — the interface of the registered MLflow model.

Input columns (all strings; every one but ``patient_id`` optional, empty meaning 'not available'):

| column | value |
| --- | --- |
| patient_id | the patient's id (only echoed back, never logged) |
| dicom_files | a JSON list of the series' DICOM file paths, or a folder holding one series |
| dicom_b64 | instead of ``dicom_files``: a JSON list of base64-encoded DICOM Part-10 files of one series (see below) |
| body_part | BodyPartExamined; default: read from the first DICOM file |
| notes | a JSON list of note texts, or else one note as plain text |
| notes_file | a text file holding one note (UTF-8, else its detected encoding), or a folder of ``.txt`` notes (added to ``notes``) |
| expression | a JSON object ``{gene: value}`` in the unit the model was trained on |
| expression_file | a CSV/TSV with gene columns and one data row (a leading sample-id column is ignored) |
| mutations | a JSON list of non-silent mutated gene symbols |

Output: one row per input row: patient_id, predicted, ``prob_<class>`` for every class (calibrated with the
model's temperature), the top-3 differential (top1, top1_prob … top3_prob), the conformal prediction set
(prediction_set, '+'-joined, most probable first, and set_size), decision ('predict' or 'abstain: refer for
review'), modalities (the ones used, '+'-joined), omics_measured (the share of the model's omics features the
row measured; null without omics: below :data:`LOW_PANEL_SHARE` the reason says so and the server log counts the
rows, since the rest are imputed from the measured ones — a panel unlike the training cohort's), status ('scored'
or 'not scored') and reason; then the
explanation (:mod:`clinicmm.serve.explain`): share_image, share_note, share_omics, top_genes and top_concepts
('name:score|…', leave-one-link-out, graph models only), top_gene_sets ('name:score|…', leave-one-set-out of a graph
network's gene-set read-in), top_path (the highest-weight graph path from the patient to the predicted cancer-type
node) and ``explanation`` (all of it as JSON).

Output types are stable, so the JSON a served model returns is strict (no ``NaN``, which ``JSON.parse`` rejects):
the probabilities and shares are floats or null, ``set_size`` an integer or null (no conformal set: a row not
scored, or a model without ``calibration.coverage``), every other column a string (see :func:`json_safe`).

File paths in a request (``dicom_files``, ``notes_file``, ``expression_file``: :data:`PATH_COLUMNS`) are read only
when they resolve (symbolic links too) to a regular file or folder inside the model's data roots (see
:func:`data_roots`); anything else makes that row ``not scored`` with the one reason :data:`REFUSED`, which says
nothing about the serving machine's files. No data roots configured: every path is refused.

DICOM sent in the request (``dicom_b64``, e.g. from a PACS router with no access to the serving machine's files):
each row's files are decoded into a private folder of the request (``tempfile.mkdtemp``, mode 700, removed when the
request ends, whatever happens), trusted for that request only, and then scored like ``dicom_files``. Limits:
:data:`MAX_B64_FILES` files per row, :data:`MAX_B64_FILE_BYTES` per decoded file and
:data:`MAX_B64_REQUEST_BYTES` decoded in all per request. Every entry must be valid base64 of a DICOM Part-10 file
(``DICM`` at offset 128); a row breaking any of this is ``not scored`` with a reason naming the column and the
entry's index, never its content (a series that decodes but cannot be read gets one generic reason too).

Explanations are opt-in per request: ``params={"explain": true}`` (MLflow params; ``"params": {"explain": true}``
next to the ``dataframe_split`` of a REST request) adds them; without it the served model returns the same
predictions with the explanation columns empty (:data:`clinicmm.serve.pyfunc.EXPLAIN_DEFAULT`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import weakref
from collections.abc import Collection, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import pandas as pd

from clinicmm.keys import MODALITIES, Col

log = logging.getLogger("clinicmm")

INPUT_COLUMNS = (
    "patient_id",
    "dicom_files",
    "dicom_b64",
    "body_part",
    "notes",
    "notes_file",
    "expression",
    "expression_file",
    "mutations",
)
PATH_COLUMNS = ("dicom_files", "notes_file", "expression_file")  # the columns that name files or folders
B64_COLUMN = "dicom_b64"  # DICOM Part-10 files sent in the request, base64-encoded
MAX_B64_FILES = 2048  # files (slices) per row
MAX_B64_FILE_BYTES = 64 << 20  # one decoded file: 64 MiB (an enhanced multi-frame series fits)
MAX_B64_REQUEST_BYTES = 512 << 20  # every row's decoded files together: 512 MiB (on the serving machine's disk)
B64_UNREADABLE = f"column {B64_COLUMN!r}: the DICOM series could not be read as an image"  # after 'image: '

# ------------------------------------------------------------------------------------ which paths may be read

DATA_ROOTS_ENV = "CLINICMM_DATA_ROOTS"
REFUSED = "input path not allowed or not readable (see serving.data_roots / $CLINICMM_DATA_ROOTS)"
LOW_PANEL_SHARE = 0.5
FAILED = "could not be scored: this row's inputs raised an error (its type is in the server log)"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # file://, http:, s3:, ... (a drive letter has one character)
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")  # URL-encoding (%2e%2e%2f): paths are sent as they are, never encoded
_TRUSTED: ContextVar[tuple[str, ...]] = ContextVar("clinicmm_trusted_roots", default=())


class PathRefused(ValueError):
    """A request's path that may not be read; its message is the column and :data:`REFUSED`, nothing else."""

    def __init__(self, column: str):
        super().__init__(f"column {column!r}: {REFUSED}")


def _root_list(paths: Sequence[str], source: str) -> list[str]:
    """The real paths of ``paths`` (absolute folders), or ConfigError naming ``source`` and the fix."""
    from clinicmm.errors import ConfigError

    out = []
    for p in paths:
        p = str(p).strip()
        if not p:
            continue
        if "\x00" in p or not os.path.isabs(p):
            raise ConfigError(
                f"{source}: data root {p!r} is not an absolute path; give absolute folders "
                f"(separated by {os.pathsep!r} in ${DATA_ROOTS_ENV})."
            )
        out.append(os.path.realpath(p))
    return sorted(set(out))


def data_roots(registered: Sequence[str] = ()) -> list[str]:
    """The folders a request's paths may point into: ``registered`` (the workflow's ``serving.data_roots``,
    stored with the model at register time) unless ``$CLINICMM_DATA_ROOTS`` is set, which then **replaces** them
    (``os.pathsep``-separated absolute folders; set but empty: none, every path refused), plus the folders of an
    enclosing :func:`allow_roots`. Real paths (symbolic links resolved); read at every call."""
    env = os.environ.get(DATA_ROOTS_ENV)
    if env is None:
        roots = _root_list(registered, "serving.data_roots (stored with the registered model)")
    else:
        roots = _root_list(env.split(os.pathsep), f"${DATA_ROOTS_ENV}")
    return sorted(set(roots) | set(_TRUSTED.get()))


@contextmanager
def allow_roots(paths: Sequence[str | os.PathLike[str]]):
    """Also allow ``paths`` to a registered model's ``predict`` called in this context, in this process (e.g.
    ``clinicmm predict`` scoring its own dataset's folders). An HTTP client cannot reach it."""
    token = _TRUSTED.set(_TRUSTED.get() + tuple(_root_list([os.fspath(p) for p in paths], "allow_roots")))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def _inside(real: str, roots: Sequence[str]) -> bool:
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def checked_path(text: str, column: str, roots: Sequence[str] | None, folder_ok: bool = False) -> str:
    """The real path of ``text`` when it may be read: an absolute, plain path (no URL, no %-escape, no NUL, no
    ``..``) that resolves (symbolic links too) inside ``roots`` to a readable regular file (or, with ``folder_ok``,
    a folder); else :class:`PathRefused`. Never opens it: special files (pipes, devices) are refused from their
    ``stat``. ``roots`` None: no check at all (trusted in-process callers; the registered model never passes it).
    """
    if roots is None:
        return text
    if (
        not roots
        or not text
        or "\x00" in text
        or _URL.match(text)
        or _ESCAPE.search(text)
        or not os.path.isabs(text)
        or ".." in Path(text).parts
    ):
        raise PathRefused(column)
    try:
        real = os.path.realpath(text)
        if not _inside(real, roots):
            raise PathRefused(column)
        mode = os.stat(real).st_mode
    except (OSError, ValueError):
        raise PathRefused(column) from None
    if not (stat.S_ISREG(mode) or (folder_ok and stat.S_ISDIR(mode))) or not os.access(real, os.R_OK):
        raise PathRefused(column)
    return real


def _cell(row: pd.Series, key: str) -> str:
    value = row.get(key, "")
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _json(text: str, expect: type, column: str, pid: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"column {column!r}: not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, expect):
        raise ValueError(f"column {column!r}: expected a JSON {expect.__name__} (got {type(value).__name__})")
    return value


def _notes(text: str) -> list[str]:
    """A JSON list of note texts, or else the cell itself as one plain-text note (which may start with '[')."""
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return [text]
        if isinstance(value, list) and all(isinstance(t, str) for t in value):
            return value
    return [text]


def _series_files(text: str, roots: Sequence[str] | None = None) -> list[str] | list[list[str]]:
    """A JSON list of files (one series), a JSON list of such lists (several, embeddings averaged) or a folder.

    With ``roots``, every file (and the folder) must pass :func:`checked_path`; the real paths are returned."""
    if text.startswith("["):
        from clinicmm.ingest.cohort import series_list

        value = _json(text, list, "dicom_files", "")
        if not value:
            return value
        if isinstance(value[0], list):
            return [[checked_path(str(f), "dicom_files", roots) for f in group] for group in series_list(value)]
        return [checked_path(str(f), "dicom_files", roots) for f in value]
    folder = Path(checked_path(text, "dicom_files", roots, folder_ok=True))
    if not folder.is_dir():
        if roots is not None:
            raise PathRefused("dicom_files")
        raise ValueError(f"column 'dicom_files': {folder} is neither a JSON list of files nor a folder")
    from clinicmm.config import ImagingSpec
    from clinicmm.ingest.dicom import index_dicom

    # links inside the folder are followed only into the roots; pipes and devices are skipped unopened
    index = index_dicom(ImagingSpec(root=folder), folder, roots=list(roots) if roots else None, follow_outside=False)
    ok = index[index[Col.STATUS] == "ok"]
    if ok.empty:
        if roots is not None:  # the index's reasons name files: not echoed to a client
            raise ValueError("column 'dicom_files': no usable DICOM series in that folder")
        reasons = "; ".join(index[Col.REASON].astype(str).head(3))
        raise ValueError(f"column 'dicom_files': no usable series in {folder} ({reasons})")
    return [checked_path(str(f), "dicom_files", roots) for f in ok.iloc[0][Col.FILES]]


def _body_part(files: list[str]) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(files[0], stop_before_pixels=True).get("BodyPartExamined", "")).upper()
    except Exception:  # unreadable header: the encoder records the real reason
        return ""


def _notes_file(text: str, roots: Sequence[str] | None = None) -> list[str]:
    """The notes in a text file, or in every .txt file of a folder (sorted by name)."""
    from clinicmm.errors import InputError
    from clinicmm.ingest.notes import decode

    if roots is not None:
        path = Path(checked_path(text, "notes_file", roots, folder_ok=True))
        if path.is_dir():
            from clinicmm.ingest.walk import walk

            listed = walk(path, roots=list(roots), follow_outside=False).files  # regular files, links kept inside
            own = sorted(f for f in listed if f.endswith(".txt") and os.path.dirname(f) == str(path))  # no subfolders
            files = [Path(checked_path(f, "notes_file", roots)) for f in own]
        else:
            files = [path]
        if not files:
            raise PathRefused("notes_file")
    else:
        path = Path(text)
        files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
        if not path.exists() or not files:
            raise ValueError(f"column 'notes_file': {path} is neither a text file nor a folder of .txt files")
    try:  # UTF-8, else the detected encoding (as the notes reader does)
        return [decode(f.read_bytes(), "auto", str(f))[0] for f in files]
    except InputError as exc:
        if roots is not None:
            raise ValueError(
                "column 'notes_file': the note is not readable text (UTF-8 or a detected encoding)"
            ) from None
        raise ValueError(f"column 'notes_file': {exc}") from None


def _expression_file(text: str, roots: Sequence[str] | None = None) -> dict[str, float]:
    """One patient's expression from a table with gene columns and a single data row (a first text column,
    such as a sample id, is ignored)."""
    path = Path(checked_path(text, "expression_file", roots))
    shown = "the file" if roots is not None else str(path)  # a served model names no path in its reasons
    if not path.is_file():
        raise ValueError(f"column 'expression_file': {path} does not exist")
    table = pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t")
    if len(table) != 1:
        counted = "" if roots is not None else f" has {len(table)} data rows;"
        raise ValueError(f"column 'expression_file': {shown}{counted} expected exactly one data row")
    row = table.iloc[0]
    values = pd.to_numeric(row, errors="coerce")
    if pd.isna(values.iloc[0]) and not pd.isna(row.iloc[0]):
        values = values.iloc[1:]
    bad = values[values.isna() & row[values.index].notna()]
    if len(bad):
        raise ValueError(f"column 'expression_file': {shown}, column {bad.index[0]!r} is not a number")
    return {str(g): float(v) for g, v in values.dropna().items()}


# ------------------------------------------------------------------------------- DICOM sent in the request


class Decoded:
    """The ``dicom_b64`` files of a request, decoded: ``files[i]`` the paths of row ``i``'s series (in a private
    folder of this request), ``errors[i]`` why row ``i``'s entries were refused (column and entry index only)."""

    def __init__(self) -> None:
        self.folder: str | None = None  # real path of the request's folder (None: nothing decoded)
        self.files: dict[int, list[str]] = {}
        self.errors: dict[int, str] = {}
        self.total = 0  # decoded bytes of the accepted rows

    def _row_folder(self, i: int) -> str:
        if self.folder is None:
            self.folder = os.path.realpath(tempfile.mkdtemp(prefix="clinicmm-b64-"))  # mode 700
        path = os.path.join(self.folder, f"row{i}")
        os.mkdir(path, 0o700)
        return path

    def add(self, i: int, text: str) -> None:
        """Decode, check and write row ``i``'s cell; a bad entry refuses the whole row (ValueError's message)."""
        what = f"column {B64_COLUMN!r}"
        try:
            entries = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"{what}: not valid JSON (expected a list of base64 strings)") from None
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{what}: expected a non-empty JSON list of base64 strings")
        if len(entries) > MAX_B64_FILES:
            raise ValueError(f"{what}: {len(entries)} files; at most {MAX_B64_FILES} per row")
        folder, paths, size = self._row_folder(i), [], 0
        try:
            for k, entry in enumerate(entries):
                data = _decode_entry(entry, k, what)
                size += len(data)
                if self.total + size > MAX_B64_REQUEST_BYTES:
                    raise ValueError(
                        f"{what}: entry {k} passes the request's limit of {_mib(MAX_B64_REQUEST_BYTES)} of "
                        "decoded DICOM in all; send fewer patients per request"
                    )
                path = os.path.join(folder, f"{k:05d}.dcm")
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                paths.append(path)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.total += size
        self.files[i] = paths

    def remove(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _decode_entry(entry, k: int, what: str) -> bytes:
    """Entry ``k``: base64 (whitespace ignored) of a DICOM Part-10 file within :data:`MAX_B64_FILE_BYTES`."""
    limit = f"entry {k} is larger than {_mib(MAX_B64_FILE_BYTES)} decoded; at most that per file"
    if not isinstance(entry, str):
        raise ValueError(f"{what}: entry {k} is not a base64 string")
    if len(entry) > (MAX_B64_FILE_BYTES // 3 + 1) * 4 * 2:  # base64 plus generous whitespace: refused undecoded
        raise ValueError(f"{what}: {limit}")
    try:
        data = base64.b64decode("".join(entry.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: entry {k} is not valid base64") from None
    if len(data) > MAX_B64_FILE_BYTES:
        raise ValueError(f"{what}: {limit}")
    if len(data) < 132 or data[128:132] != b"DICM":
        raise ValueError(f"{what}: entry {k} is not a DICOM Part-10 file (no 'DICM' preamble at offset 128)")
    return data


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.3g} MiB"


@contextmanager
def decoded_series(frame: pd.DataFrame):
    """The :class:`Decoded` ``dicom_b64`` column of ``frame``; its folder is removed when the context ends."""
    decoded = Decoded()
    try:
        if B64_COLUMN in frame.columns:
            for i, value in enumerate(frame[B64_COLUMN].tolist()):
                text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
                if not text:
                    continue
                try:
                    decoded.add(i, text)
                except ValueError as exc:
                    decoded.errors[i] = str(exc)
                except OSError as exc:  # the serving machine's disk: its message names the folder
                    log.warning("scoring: row %d's %s could not be written (%s)", i + 1, B64_COLUMN, type(exc).__name__)
                    decoded.errors[i] = FAILED
        yield decoded
    finally:
        decoded.remove()


def _parse_row(
    row: pd.Series, pid: str, roots: Sequence[str] | None = None, sent: list[str] | None = None, folder: str = ""
) -> dict:
    """One row's raw inputs; raises ValueError naming the column for anything unusable. ``sent``: the row's
    decoded ``dicom_b64`` files, in ``folder``, the one folder they may be read from."""
    out: dict = {"files": None, "body": "", "texts": [], "expr": None, "mut": []}
    d = _cell(row, "dicom_files")
    if d and sent is not None:
        raise ValueError(f"give the series in 'dicom_files' or in {B64_COLUMN!r}, not both")
    if sent is not None:
        out["files"] = [checked_path(f, B64_COLUMN, [folder]) for f in sent]
    elif d:
        out["files"] = _series_files(d, roots)
    if out["files"] is not None:
        out["body"] = _cell(row, "body_part").upper() or (_body_part(out["files"]) if out["files"] else "")
    if n := _cell(row, "notes"):
        out["texts"] += _notes(n)
    if nf := _cell(row, "notes_file"):
        out["texts"] += _notes_file(nf, roots)
    if e := _cell(row, "expression"):
        out["expr"] = {str(k): float(v) for k, v in _json(e, dict, "expression", pid).items()}
    elif ef := _cell(row, "expression_file"):
        out["expr"] = _expression_file(ef, roots)
    if m := _cell(row, "mutations"):
        out["mut"] = [(pid, str(g)) for g in _json(m, list, "mutations", pid)]
    return out


def parse_frame(frame: pd.DataFrame, roots: Sequence[str] | None = None, decoded: Decoded | None = None) -> dict:
    """Per-row raw inputs, and a reason for each row that cannot be parsed (that row only is skipped).

    ``roots``: the folders a path may point into (:func:`checked_path`; an empty list refuses every path); None
    checks nothing and is for trusted in-process callers only (the registered model always passes a list).
    ``decoded``: the request's ``dicom_b64`` files (:func:`decoded_series`); a frame with that column needs it."""
    if "patient_id" not in frame.columns:
        raise ValueError(f"missing column 'patient_id'; expected columns: {', '.join(INPUT_COLUMNS)}")
    if decoded is None and B64_COLUMN in frame.columns and any(_cell(r, B64_COLUMN) for _, r in frame.iterrows()):
        raise ValueError(f"column {B64_COLUMN!r}: decode it first (clinicmm.serve.scoring.decoded_series)")
    decoded = decoded or Decoded()
    parsed = {"patients": [], "series": [], "body_parts": [], "texts": [], "expr": {}, "mut": [], "errors": {}}
    first_row: dict[str, int] = {}
    for i, (_, row) in enumerate(frame.iterrows()):
        pid = _cell(row, "patient_id") or f"row-{i + 1}"
        parsed["patients"].append(pid)
        try:
            if pid in first_row:
                raise ValueError(
                    f"patient_id appears again (first in row {first_row[pid] + 1}); give each patient one row"
                )
            first_row[pid] = i
            if i in decoded.errors:
                raise ValueError(decoded.errors[i])
            one = _parse_row(row, pid, roots, decoded.files.get(i), decoded.folder or "")
        except (ValueError, TypeError, OSError) as exc:
            # served (roots given): an OSError's text names a path, so it reads as a refused path
            refused = roots is not None and isinstance(exc, OSError)
            parsed["errors"][i] = f"{REFUSED}" if refused else str(exc)
            one = {"files": None, "body": "", "texts": [], "expr": None, "mut": []}
        except Exception as exc:  # noqa: BLE001 -- any other failure is this row's, never the request's
            log.warning("scoring: row %d could not be parsed (%s)", i + 1, type(exc).__name__)
            parsed["errors"][i] = FAILED
            one = {"files": None, "body": "", "texts": [], "expr": None, "mut": []}
        parsed["series"].append(one["files"])
        parsed["body_parts"].append(one["body"])
        parsed["texts"].append(one["texts"])
        if one["expr"] is not None:
            parsed["expr"][pid] = one["expr"]
        parsed["mut"] += one["mut"]
    return parsed


def _omics_tables(parsed: dict) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    expr = pd.DataFrame.from_dict(parsed["expr"], orient="index") if parsed["expr"] else None
    if expr is not None:
        expr.index.name = Col.PATIENT.value
    mut = (
        pd.DataFrame(
            [
                {"patient_id": p, "sample_id": p, "gene": g, "variant_class": "", "non_silent": True, "status": "ok"}
                for p, g in parsed["mut"]
            ]
        )
        if parsed["mut"]
        else None
    )
    return expr, mut


def encode_frame(parsed: dict, featurizer):
    """EncodedCohort of the parsed rows (absent modality: None; failures carry the row)."""
    patients = parsed["patients"]
    expr, mut = _omics_tables(parsed)
    has_omics = np.array([p in parsed["expr"] or any(q == p for q, _ in parsed["mut"]) for p in patients])
    encoded = featurizer.encode(patients, parsed["series"], parsed["body_parts"], parsed["texts"], expr, mut, has_omics)
    pre = featurizer.preprocessor
    measured = np.full(len(patients), np.nan)
    if pre is not None and has_omics.any():
        measured[has_omics] = pre.measured(expr, [p for p, ok in zip(patients, has_omics) if ok])
    return encoded, len(patients), measured


FUSION_THREADS_ENV = "CLINICMM_FUSION_THREADS"


def fusion_threads() -> int:
    """Torch threads for the fusion network and the explanations: ``$CLINICMM_FUSION_THREADS``, default 1. Their
    ops are small (a graph of a few thousand edges, a few dozen patients), so more threads only add synchronisation:
    on a 2-core machine with other work running, one thread made them 5-30x faster than two (see
    benchmarks/serve.py), while the encoders' convolutions and attention keep every thread."""
    return env_threads(FUSION_THREADS_ENV) or 1


def env_threads(name: str) -> int | None:
    """``$name`` as a thread count, at least 1; None when it is unset or not a whole number (said in the log)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return max(1, int(value))
    except ValueError:
        log.warning("serving: $%s is not a whole number; ignored", name)
        return None


@contextmanager
def _threads(n: int):
    """``torch.set_num_threads(n)`` for the block, then back (OpenMP's count is the calling thread's own, so
    other requests' threads keep theirs)."""
    import torch

    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_HETERO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # KnowledgeGraph -> its HeteroData


def hetero_of(knowledge):
    """``knowledge.to_hetero()``, built once per graph object (a loaded model's graph never changes; batches copy
    it, never write into it)."""
    if knowledge not in _HETERO:
        _HETERO[knowledge] = knowledge.to_hetero()
    return _HETERO[knowledge]


def score(
    bundle, model, featurizer, frame: pd.DataFrame, roots: Sequence[str] | None = (), explain: bool = True
) -> pd.DataFrame:
    """Predict every row of ``frame`` (see the module docstring for the columns); strict-JSON types out.

    ``roots``: the folders the rows' paths may point into (default: none, every path refused; see
    :func:`parse_frame`). A row whose inputs break the batch is retried alone; a row that fails alone comes back
    ``not scored`` (reason :data:`FAILED`) and the others are scored: a request never fails for one row.
    ``explain`` False: the explanation columns stay empty and cost nothing. The rows are scored as one batch."""
    with decoded_series(frame) as decoded:  # dicom_b64: a private folder, removed on the way out
        parsed = parse_frame(frame, roots, decoded)
        try:
            result = _score_parsed(bundle, model, featurizer, parsed, explain, set(decoded.files))
        except Exception as exc:  # noqa: BLE001 -- find the rows that fail, score the others
            n = len(parsed["patients"])
            log.warning("scoring: the batch of %d rows failed (%s); scoring the rows one by one", n, type(exc).__name__)
            result = pd.concat(
                [_score_alone(bundle, model, featurizer, parsed, i, explain, i in decoded.files) for i in range(n)],
                ignore_index=True,
            )
    return json_safe(result)


def _score_parsed(
    bundle, model, featurizer, parsed: dict, explain: bool = True, sent: Collection[int] = ()
) -> pd.DataFrame:
    """The rows of ``parsed`` scored as one batch; ``sent``: the rows whose series came as ``dicom_b64``."""
    from clinicmm.training.data import to_evidence
    from clinicmm.training.fit import predict_proba

    encoded, n, measured = encode_frame(parsed, featurizer)
    for f in encoded.failures:  # a sent series' reason would name the request's private folder
        if f["row"] in sent and f["modality"] == "image":
            f["reason"] = B64_UNREADABLE
    for m in MODALITIES:  # absent modality: NaN block of the trained width
        if encoded.vectors[m.value] is None:
            encoded.vectors[m.value] = np.full((n, bundle.dims[m.value]), np.nan, dtype=np.float32)
    present = np.stack([encoded.has(m.value) for m in MODALITIES], axis=1)
    rows = [i for i in range(n) if present[i].any() and i not in parsed["errors"]]
    items = to_evidence(encoded, rows, [-1] * len(rows), bundle.knowledge, bundle.scaler)
    hetero = hetero_of(bundle.knowledge) if items else None  # one graph for the predictions and their explanations
    from clinicmm.serve.explain import add_explanations  # modality shares, top genes / concepts, graph paths

    with _threads(fusion_threads()):  # small graph ops: fewer threads, less waiting (see fusion_threads)
        probs = predict_proba(model, items, hetero, bundle.dims) if items else np.zeros((0, len(bundle.classes)))
        result = _result_frame(
            parsed, encoded, bundle.classes, rows, bundle.calibration.apply(probs), present, bundle.calibration,
            measured,
        )  # fmt: skip
        if not explain:  # the same columns, empty
            return add_explanations(result, model, [], [], bundle)
        return add_explanations(result, model, items, rows, bundle, hetero)


def _one_row(parsed: dict, i: int, error: str | None = None) -> dict:
    """Row ``i`` of ``parsed`` as a parsed frame of its own (with ``error`` as its reason, if given)."""
    pid = parsed["patients"][i]
    error = error or parsed["errors"].get(i)
    return {
        "patients": [pid],
        "series": [parsed["series"][i]],
        "body_parts": [parsed["body_parts"][i]],
        "texts": [parsed["texts"][i]],
        "expr": {pid: parsed["expr"][pid]} if pid in parsed["expr"] and i not in parsed["errors"] else {},
        "mut": [m for m in parsed["mut"] if m[0] == pid] if i not in parsed["errors"] else [],
        "errors": {0: error} if error else {},
    }


def _score_alone(
    bundle, model, featurizer, parsed: dict, i: int, explain: bool = True, sent: bool = False
) -> pd.DataFrame:
    """Row ``i`` scored on its own; ``not scored`` with :data:`FAILED` when that fails too."""
    try:
        return _score_parsed(bundle, model, featurizer, _one_row(parsed, i), explain, {0} if sent else ())
    except Exception as exc:  # noqa: BLE001
        log.warning("scoring: row %d failed (%s); reported not scored", i + 1, type(exc).__name__)
    from types import SimpleNamespace

    from clinicmm.serve.explain import add_explanations

    one = _one_row(parsed, i, FAILED)
    result = _result_frame(
        one, SimpleNamespace(failures=[]), bundle.classes, [], [], np.zeros((1, len(MODALITIES)), dtype=bool)
    )
    return add_explanations(result, model, [], [], bundle)


# --------------------------------------------------------------------------------------- strict JSON out


def _finite(value) -> float | None:
    if value is None or isinstance(value, str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _float_column(name: str) -> bool:
    return name.startswith(("prob_", "share_")) or name.endswith("_prob") or name == "omics_measured"


def _clean_json(value):
    """``value`` (parsed JSON) with every NaN / infinity replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


def _plain(value):
    """A string / None cell: NaN and numpy scalars become None and Python values."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def output_columns(classes: Sequence[str]) -> list[tuple[str, str]]:
    """``(column, MLflow type)`` of the output frame, in its order: the model signature's output schema."""
    from clinicmm.serve.explain import COLUMNS
    from clinicmm.training.calibration import empty_columns

    names = ["patient_id", "predicted", *(f"prob_{c}" for c in classes), *empty_columns()]
    names += ["modalities", "omics_measured", "status", "reason", *COLUMNS, "explanation"]
    return [(n, "double" if _float_column(n) else "long" if n == "set_size" else "string") for n in names]


def json_safe(result: pd.DataFrame) -> pd.DataFrame:
    """``result`` with stable, strict-JSON types: probabilities and shares float or None, ``set_size`` int or
    None, strings elsewhere (None for a missing value), the ``explanation`` JSON without NaN. Never NaN or inf:
    the columns are of object dtype, so pandas keeps None as None (and JSON null)."""
    columns = {}
    for name in result.columns:
        values = result[name].tolist()
        if _float_column(name):
            cells = [_finite(v) for v in values]
        elif name == "set_size":
            cells = [None if (f := _finite(v)) is None else int(round(f)) for v in values]
        elif name == "explanation":
            cells = [
                json.dumps(_clean_json(json.loads(v)), allow_nan=False) if isinstance(v, str) and v else ""
                for v in values
            ]
        else:
            cells = [_plain(v) for v in values]
        columns[name] = cells
    # one object array, one frame: building it column by column costs more than the rest of the serving layer
    table = np.empty((len(result), len(columns)), dtype=object)
    for j, cells in enumerate(columns.values()):
        table[:, j] = cells if cells else []
    return pd.DataFrame(table, index=result.index, columns=list(columns), dtype=object)


def _result_frame(parsed, encoded, classes, rows, probs, present, calibration=None, measured=None) -> pd.DataFrame:
    from clinicmm.training.calibration import Calibration, empty_columns

    failed = {}
    for f in encoded.failures:
        failed.setdefault(f["row"], []).append(f"{f['modality']}: {f['reason']}")
    measured = np.full(len(parsed["patients"]), np.nan) if measured is None else measured
    low = set(rows) & set(np.flatnonzero(measured < LOW_PANEL_SHARE).tolist())  # NaN compares False
    for i in low:
        failed.setdefault(i, []).append(
            f"omics: {measured[i]:.0%} of the model's omics features measured, the others imputed from them (a "
            "layer not measured at all: the training mean); a panel unlike the training cohort's, read with care"
        )
    if low:  # counts only: no patient id in the log
        log.warning(
            "scoring: %d of %d scored rows measured under %.0f%% of the model's omics features (column "
            "omics_measured); their other features are imputed or at the training mean", len(low), len(rows),
            100 * LOW_PANEL_SHARE,
        )  # fmt: skip
    out = []
    scored = dict(zip(rows, probs))
    trust = dict(zip(rows, (calibration or Calibration()).columns(probs, classes)))
    for i, pid in enumerate(parsed["patients"]):
        rec = {"patient_id": pid, "predicted": ""} | {f"prob_{c}": np.nan for c in classes} | empty_columns()
        used = [m.value for j, m in enumerate(MODALITIES) if present[i, j]]
        rec["modalities"] = "+".join(used)
        rec["omics_measured"] = float(measured[i]) if i in scored else np.nan
        if i in scored:
            rec["predicted"] = classes[int(np.argmax(scored[i]))]
            rec.update({f"prob_{c}": float(p) for c, p in zip(classes, scored[i])} | trust[i])
            rec["status"], rec["reason"] = "scored", "; ".join(failed.get(i, []))
        else:
            reason = (
                parsed["errors"].get(i) or "; ".join(failed.get(i, [])) or "no usable image, note or genomics input"
            )
            rec["status"], rec["reason"] = "not scored", reason
        out.append(rec)
    return pd.DataFrame(out)
