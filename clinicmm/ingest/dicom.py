"""Find the DICOM images under an imaging root and pick one usable series per patient.

Only headers are read (``stop_before_pixels=True``), in ``ImagingSpec.workers`` processes, and each file's facts
are spooled to an on-disk SQLite table as they arrive; series are then formed one at a time from that table,
so the scan's memory does not grow with the number of files. Every file under the root ends up either in the
``files`` of an ``ok`` row or in a ``skipped`` row whose ``reason`` says what is wrong (file, DICOM tag,
transfer syntax) and how to fix it -- nothing is dropped silently.

Three kinds of image objects (column ``image_kind``):
- ``volume``: a CT / MR / PT / NM series stored one slice per file, grouped by PatientID / StudyInstanceUID /
  SeriesInstanceUID and checked for one orientation, one image size, no duplicated slice positions. A series
  whose positions repeat holds several volumes (fMRI time points, echoes, diffusion weightings): they are told
  apart by TemporalPositionIdentifier / AcquisitionNumber / EchoNumbers / DiffusionBValue or, failing those, by
  InstanceNumber order, and ``ImagingSpec.volume`` picks the one used (``first``, ``mean``, or the N-th); columns
  ``n_volumes`` and ``volume_used`` say which, and the unused volumes' files are a skipped row of their own. A
  Siemens mosaic (ImageType MOSAIC; NumberOfImagesInMosaic from the CSA header) is one volume per file, its
  slices tiled in one frame, rebuilt by the image loader (:func:`read_mosaic`). The second copy of an image
  (same SOPInstanceUID, same position) is a skipped row naming the copy used;
- ``multiframe``: one file holding a whole volume (enhanced CT / MR / PET, breast tomosynthesis); per-frame
  positions and orientations in its functional groups are checked the same way;
- ``2d``: projection images (CR, DX, MG, US, XA, RF, SC, OT, ...), grouped by series; the series' first file
  (by path) is the image used, and a cine loop contributes its middle frame.
Which series of a patient is used follows ``ImagingSpec``: modality, a SeriesDescription pattern, a minimum
number of slices, then the preferences in ``prefer`` (most slices, thinnest slices, latest study).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import multiprocessing
import os
import re
import sqlite3
import stat
import struct
import sys
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from tqdm.auto import tqdm

from clinicmm.config import ImagingSpec
from clinicmm.errors import ConfigError, InputError
from clinicmm.ingest.walk import FOLLOW_LINKS_OUTSIDE, printable, walk
from clinicmm.keys import Col, Status

N_VOLUMES = "n_volumes"  # volumes (time points, echoes, b-values) the series holds; 0 on file rows
VOLUME_USED = "volume_used"  # which of them FILES holds: '1'.. 'N' (counted from 1) or 'mean'; '' when none
COLUMNS: tuple[str, ...] = tuple(str(c) for c in (
    Col.PATIENT, Col.STUDY_UID, Col.SERIES_UID, Col.SERIES_DIR, Col.FILES, Col.N_SLICES,
    Col.MODALITY_TAG, Col.BODY_PART, Col.STATUS, Col.REASON, Col.SOURCE,
    Col.IMAGE_KIND, Col.SOP_UID, Col.SYNTAX, Col.SLICE_MM, Col.STUDY_DATE, Col.DESCRIPTION,
    N_VOLUMES, VOLUME_USED,
))  # fmt: skip
PROGRESS_MIN_FILES = 500  # show a progress bar from this many files on
VOLUME_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
_TOMOSYNTHESIS = {"1.2.840.10008.5.1.4.1.1.13.1.3", "1.2.840.10008.5.1.4.1.1.13.1.4", "1.2.840.10008.5.1.4.1.1.13.1.5"}
_DICOMDIR = "1.2.840.10008.1.3.10"
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_CHUNK = 64  # files per task handed to a header-scan worker
_BATCH = 256  # spool rows written per executemany


@dataclass(frozen=True)
class _Slice:
    """The header facts of one good image file that grouping, the geometry checks and selection need."""

    path: str
    patient: str
    study: str
    series: str
    modality: str
    body_part: str
    orientation: tuple[float, ...]  # () where the object has none (2D)
    position: tuple[float, ...]
    shape: tuple[int, int]
    kind: str = "volume"
    frames: int = 1
    sop: str = ""
    syntax: str = ""
    thickness: float = float("nan")
    study_date: str = ""
    description: str = ""
    frame_problem: str = ""  # multi-frame objects: what the per-frame geometry check found
    temporal: str = ""  # TemporalPositionIdentifier: which time point of a 4D series
    acquisition: str = ""  # AcquisitionNumber
    echo: str = ""  # EchoNumbers: which echo of a multi-echo series
    bvalue: str = ""  # DiffusionBValue: which diffusion weighting
    instance: int = 0  # InstanceNumber (0: none)
    mosaic: int = 0  # a Siemens mosaic: the number of slices tiled in its one frame (0: not a mosaic)


def tag_name(keyword: str) -> str:
    """``PatientID (0010,0020)``: a keyword with its tag, for messages."""
    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def index_dicom(
    spec: ImagingSpec,
    root: Path,
    spool: Path | None = None,
    roots: list[Path] | None = None,
    follow_outside: bool = FOLLOW_LINKS_OUTSIDE,
) -> pd.DataFrame:
    """Index every file under ``root`` (the resolved ``spec.root``): one ``ok`` row per patient's chosen series.

    Columns (``COLUMNS``): patient_id, study_uid, series_uid, series_dir, files (absolute paths; for a volume
    sorted along the slice normal), n_slices (slices or frames; 0 on file rows), dicom_modality, body_part
    (BodyPartExamined, upper case), status ('ok' / 'skipped'), reason, source (the file of a file row, the
    folder of a series row), image_kind, sop_uids, transfer_syntax, slice_thickness, study_date,
    series_description. Rows: one per series or single-file image (usable or not) and one per file that could
    not join one; ``ok`` rows first. ``spool``: folder for the temporary on-disk index (default: system temp).
    ``roots``: the dataset's folders symbolic links may lead into (default: ``root``); special files (pipes,
    sockets, devices), link loops and links leaving the roots (unless ``follow_outside``) are skipped rows, never
    opened (see ``ingest.walk``).
    """
    if tag_for_keyword(spec.patient_tag) is None:
        raise ConfigError(
            f"imaging.patient_tag: {spec.patient_tag!r} is not a DICOM keyword. Use a keyword such as 'PatientID'."
        )
    if spec.series_description is not None:
        try:
            re.compile(spec.series_description)
        except re.error as exc:
            raise ConfigError(
                f"imaging.series_description: {spec.series_description!r} is not a valid regular expression ({exc})"
            ) from None
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: the imaging root is not a folder. Fix imaging.root in the dataset YAML.")
    walked = walk(root, roots if roots is not None else [root], follow_outside)
    paths = walked.files
    bar = tqdm(
        total=len(paths),
        desc="Indexing DICOM",
        unit="file",
        file=sys.stderr,
        disable=None if len(paths) >= PROGRESS_MIN_FILES else True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="clinicmm-dicom-index-", dir=spool) as tmp,
        _Spool(Path(tmp) / "index.sqlite") as db,
    ):
        for batch in _batches(scan_records(paths, root, spec.patient_tag, spec.workers), _BATCH):
            db.add_records(batch)
            bar.update(len(batch))
        bar.close()
        rows = [_file_row(path, reason) for path, reason in walked.skipped]
        rows.extend(db.file_rows())
        rows.extend(_series_rows(db.groups(), db.dropped(), spec, root))
    return _frame(rows)


def scan_records(
    paths: Iterable[str], root: Path, patient_tag: str = "PatientID", workers: int = 1
) -> Iterator[tuple[str, str, str]]:
    """Each file's spool record ``(table, key, json)``, in order; ``workers`` > 1 reads in that many processes.

    The workers also serialise, so the parent only writes rows: with 2 workers on 2 cores it is not the bottleneck.
    """
    read = functools.partial(_record, root=Path(root), patient_tag=patient_tag)
    if workers <= 1:
        yield from map(read, paths)
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)  # fork: no re-import per worker
    with context.Pool(workers) as pool:
        yield from pool.imap(read, paths, chunksize=_CHUNK)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    """Lists of up to ``size`` consecutive items (``itertools.batched`` is Python 3.12+)."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _record(path: str, root: Path, patient_tag: str) -> tuple[str, str, str]:
    return _Spool.record(_read_slice(path, root, patient_tag))


class _Spool:
    """An on-disk table of scanned files: slices grouped later one series at a time, and the skipped files."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE slices (key TEXT, facts TEXT)")
        self.db.execute("CREATE TABLE skipped (key TEXT, row TEXT)")

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()

    @staticmethod
    def record(found: _Slice | dict) -> tuple[str, str, str]:
        """``(table, key, json)`` of one scanned file: a slice grouped by series, or a skipped file's row."""
        if isinstance(found, _Slice):
            single = found.kind == "multiframe"  # a multi-frame file is a volume of its own
            key = json.dumps([found.patient, found.study, found.series, found.path if single else ""])
            return "slices", key, json.dumps([getattr(found, f) for f in _FIELDS])
        key = json.dumps([found[Col.PATIENT], found[Col.STUDY_UID], found[Col.SERIES_UID]])
        return "skipped", key, json.dumps({str(k): v for k, v in found.items()})

    def add_records(self, records: Iterable[tuple[str, str, str]]) -> None:
        by_table: dict[str, list[tuple[str, str]]] = {"slices": [], "skipped": []}
        for table, key, value in records:
            by_table[table].append((key, value))
        for table, rows in by_table.items():
            if rows:
                self.db.executemany(f"INSERT INTO {table} VALUES (?, ?)", rows)  # noqa: S608 -- fixed table names

    def groups(self) -> Iterator[list[_Slice]]:
        """The scanned slices, one list per series (or per single-file image), in a stable order."""
        cursor = self.db.execute("SELECT key, facts FROM slices ORDER BY key, facts")
        for _, rows in itertools.groupby(cursor, key=lambda r: r[0]):
            yield [_slice_from(json.loads(facts)) for _, facts in rows]

    def file_rows(self) -> Iterator[dict]:
        for (row,) in self.db.execute("SELECT row FROM skipped ORDER BY rowid"):
            yield json.loads(row)

    def dropped(self) -> dict[tuple[str, str, str], int]:
        """Skipped files per (patient, study, series), so a series row can say some of its files were skipped."""
        return {tuple(json.loads(k)): n for k, n in self.db.execute("SELECT key, COUNT(*) FROM skipped GROUP BY key")}


_FIELDS = tuple(f.name for f in dataclasses.fields(_Slice))


def _slice_from(values: list) -> _Slice:
    fields = dict(zip(_FIELDS, values))
    for name in ("orientation", "position", "shape"):
        fields[name] = tuple(fields[name])
    return _Slice(**fields)


# ------------------------------------------------------------------------------------------------- files


def _list_files(root: Path) -> list[str]:
    """Absolute paths of the non-hidden regular files below ``root`` (hidden folders are not entered)."""
    return walk(root).files


def _file_row(path: str, reason: str, patient: str = "", study: str = "", series: str = "", syntax: str = "") -> dict:
    return {
        Col.PATIENT: patient, Col.STUDY_UID: study, Col.SERIES_UID: series, Col.SERIES_DIR: os.path.dirname(path),
        Col.FILES: [path], Col.N_SLICES: 0, Col.MODALITY_TAG: "", Col.BODY_PART: "",
        Col.STATUS: Status.SKIPPED.value, Col.REASON: reason, Col.SOURCE: path, Col.IMAGE_KIND: "",
        Col.SOP_UID: [], Col.SYNTAX: syntax, Col.SLICE_MM: float("nan"), Col.STUDY_DATE: "", Col.DESCRIPTION: "",
        N_VOLUMES: 0, VOLUME_USED: "",
    }  # fmt: skip


def _read_slice(path: str, root: Path, patient_tag: str) -> _Slice | dict:
    """The image facts of one file, or a skipped file row saying why it cannot be used."""
    name = printable(os.path.relpath(path, root))
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # replaced by a pipe or device since the walk: never open it
            return _file_row(path, f"{name}: not a regular file; skipped without opening it")
        with open(path, "rb") as fp:
            ds = _Header(pydicom.dcmread(fp, stop_before_pixels=True))
            sop_class = str(
                ds.get("SOPClassUID", "") or ds.get("file_meta", {}).get("MediaStorageSOPClassUID", "") or ""
            )
            if sop_class == _DICOMDIR:
                return _file_row(path, (
                    f"{name}: a DICOMDIR (media directory), not an image; the files it lists are indexed where they "
                    "lie under the imaging root"
                ))  # fmt: skip
            problem = _pixel_problem(fp, ds, name, os.path.getsize(path), sop_class)
    except InvalidDicomError:
        return _file_row(
            path, f"{name}: not a DICOM file (no 'DICM' preamble); remove it or move it out of the imaging root"
        )
    except Exception as exc:  # noqa: BLE001 -- any unreadable header is recorded, never fatal
        reason = f"{name}: unreadable DICOM header, truncated or corrupt ({type(exc).__name__}: {exc}); re-export it"
        return _file_row(path, reason)
    syntax = str(ds.get("file_meta", {}).get("TransferSyntaxUID", "") or "")
    ids = {"patient": _joined(ds.get(patient_tag, "")), "study": str(ds.get("StudyInstanceUID", "")),
           "series": str(ds.get("SeriesInstanceUID", "")), "syntax": syntax}  # fmt: skip
    if not problem and not ids["patient"]:
        problem = f"{name}: no patient id in {tag_name(patient_tag)}; fill the tag or remove the file"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    frames = _int(ds.get("NumberOfFrames"), 1)
    kind = image_kind(ds)
    problem = problem or _missing_tags(ds, name, kind) or _spacing_problem(ds, name) or _decoder_problem(syntax, name)
    mosaic = 0
    if not problem and kind == "volume":
        mosaic, problem = _mosaic_images(ds, name)
    geometry = ((), ()) if kind != "volume" else None if problem else _geometry(ds)
    if problem or geometry is None:
        problem = problem or (
            f"{name}: {tag_name('ImageOrientationPatient')} needs 6 numbers and {tag_name('ImagePositionPatient')} "
            "3 finite numbers; fix the tags or remove the file"
        )
        return _file_row(path, problem, **ids)
    frame_problem = _frame_geometry_problem(ds, name) if kind == "multiframe" else ""
    return _Slice(
        path, ids["patient"], ids["study"], ids["series"], modality,
        str(ds.get("BodyPartExamined", "") or "").strip().upper(), *geometry, (int(ds.Rows), int(ds.Columns)),
        kind=kind, frames=frames, sop=str(ds.get("SOPInstanceUID", "") or ""), syntax=syntax,
        thickness=_float(_frame_thickness(ds) if kind == "multiframe" else ds.get("SliceThickness")),
        study_date=str(ds.get("StudyDate", "") or ""), description=str(ds.get("SeriesDescription", "") or ""),
        frame_problem=frame_problem, temporal=_text(ds.get("TemporalPositionIdentifier")),
        acquisition=_text(ds.get("AcquisitionNumber")), echo=_text(ds.get("EchoNumbers")),
        bvalue=_text(ds.get("DiffusionBValue")), instance=_int(ds.get("InstanceNumber"), 0), mosaic=mosaic,
    )  # fmt: skip


_STRING_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "PN", "SH", "TM", "UI"}
_NUMBER_VRS = {"DS", "IS"}


class _Header:
    """Fast read-only access to the header values the index needs.

    ``Dataset.get`` converts each raw element through pydicom's hooks, which costs more than reading the file;
    for the plain string, number and US elements used here the raw bytes are decoded directly (a few
    microseconds each); anything else (sequences, odd VRs, already-converted elements) goes through pydicom.
    """

    def __init__(self, ds: pydicom.Dataset) -> None:
        self.ds = ds
        self.file_meta = ds.get("file_meta", {})
        self.original_encoding = ds.original_encoding
        self._endian = "<" if ds.original_encoding[1] is not False else ">"
        self._memo: dict[str, object] = {}

    def get(self, keyword: str, default=None):
        if keyword == "file_meta":
            return self.file_meta
        if keyword not in self._memo:
            self._memo[keyword] = self._read(keyword)
        value = self._memo[keyword]
        return default if value is None else value

    def __getattr__(self, keyword: str):
        value = self.get(keyword)
        if value is None:
            raise AttributeError(keyword)
        return value

    def __contains__(self, keyword: str) -> bool:
        return self.get(keyword) is not None

    def _read(self, keyword: str):
        tag = tag_for_keyword(keyword)
        if tag is None or tag not in self.ds:
            return None
        raw = self.ds.get_item(tag)
        if not isinstance(raw, pydicom.dataelem.RawDataElement) or raw.value is None:
            return self.ds.get(keyword)
        vr = raw.VR or pydicom.datadict.dictionary_VR(tag)
        text = None
        if vr in _STRING_VRS or vr in _NUMBER_VRS:
            try:
                text = raw.value.decode("ascii").strip(" \x00")
            except UnicodeDecodeError:
                return self.ds.get(keyword)
        if vr in _STRING_VRS:
            parts = text.split("\\")
            return parts[0] if len(parts) == 1 else parts
        if vr in _NUMBER_VRS:
            try:
                numbers = [float(v) if vr == "DS" else int(v) for v in text.split("\\") if v.strip()]
            except ValueError:
                return self.ds.get(keyword)  # a malformed number: pydicom's own handling and warning
            return None if not numbers else numbers[0] if len(numbers) == 1 else numbers
        if vr == "US" and len(raw.value) == 2:
            return struct.unpack(self._endian + "H", raw.value)[0]
        return self.ds.get(keyword)


def _text(value) -> str:
    """A header value as a short string: '' when absent, several values joined with ``\\``, 2.0 as '2'."""
    if value is None or value == "":
        return ""
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        return "\\".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).strip()


def _joined(value) -> str:
    """A string element's value as one string: a multi-valued one (``A\\B`` in the file) joined back with ``\\``.

    A backslash is DICOM's value separator, so a PatientID written ``A\\B`` reads as two values; the id is the
    whole raw string, the one a labels table holds.
    """
    if value is None:
        return ""
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


_SPACING_TAG = 0x00280030


def _spacing_problem(ds: _Header, name: str) -> str | None:
    """Why PixelSpacing (0028,0030), when present, cannot be used: a VR other than DS, or not 2 finite numbers > 0."""
    raw_ds = ds.ds
    if _SPACING_TAG not in raw_ds:
        return None
    fix = "fix the tag (two positive numbers, row and column spacing in mm) or re-export the series"
    vr = getattr(raw_ds.get_item(_SPACING_TAG), "VR", None)
    if vr not in (None, "DS"):
        return f"{name}: {tag_name('PixelSpacing')} has VR {vr}, not DS (decimal string); {fix}"
    try:
        value = ds.get("PixelSpacing")
        if value is None or (isinstance(value, str | bytes) and not value.strip()):
            return None  # present but empty: as if absent (2D objects often carry ImagerPixelSpacing instead)
        many = isinstance(value, list | tuple | pydicom.multival.MultiValue)
        numbers = [float(v) for v in (value if many else [value])]
    except Exception:  # noqa: BLE001 -- any unparsable value is a recorded problem, never fatal
        return f"{name}: {tag_name('PixelSpacing')} is not a pair of numbers; {fix}"
    if len(numbers) != 2 or not all(np.isfinite(v) and v > 0 for v in numbers):
        return f"{name}: {tag_name('PixelSpacing')} is not 2 finite numbers above 0 (NaN, infinite, zero or missing value); {fix}"
    return None


def image_kind(ds: pydicom.Dataset) -> str:
    """'multiframe' (a volume in one file), 'volume' (one slice of a volume series) or '2d', from the header."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if _int(ds.get("NumberOfFrames"), 1) > 1 and (modality in VOLUME_MODALITIES or sop_class in _TOMOSYNTHESIS):
        return "multiframe"
    return "volume" if modality in VOLUME_MODALITIES else "2d"


def _int(value, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _float(value) -> float:
    try:
        return float(value) if value not in (None, "") else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _decoder_problem(syntax: str, name: str) -> str | None:
    """Why the pixel data cannot be decoded here (transfer syntax named), or None."""
    if not syntax:
        return None
    uid = UID(syntax)
    if not uid.is_compressed:
        return None
    from pydicom.pixels import get_decoder

    label = f"{uid.name} ({uid})" if uid.is_transfer_syntax else f"{uid} (not a transfer syntax pydicom knows)"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"{name}: quarantined -- no pixel-data decoder exists for transfer syntax {label}; re-export it uncompressed"
    if not decoder.is_available:
        missing = (
            "; ".join(f"{k}: {', '.join(v)}" for k, v in decoder.missing_dependencies.items())
            if hasattr(decoder, "missing_dependencies")
            else ""
        )
        return (
            f"{name}: quarantined -- transfer syntax {label} cannot be decoded with the installed plugins"
            f"{' (' + missing + ')' if missing else ''}; install a decoder for it or re-export the file uncompressed"
        )
    return None


def _frame_geometry_problem(ds: pydicom.Dataset, name: str) -> str:
    """A multi-frame object's per-frame geometry: one orientation and no duplicated frame positions."""
    frames = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    orientations, positions = set(), []
    for item in frames:
        plane = item.get("PlanePositionSequence")
        if plane and plane[0].get("ImagePositionPatient") is not None:
            positions.append(tuple(round(float(v), 3) for v in plane[0].ImagePositionPatient))
        for group in (item, shared):
            orient = group.get("PlaneOrientationSequence") if group is not None else None
            if orient and orient[0].get("ImageOrientationPatient") is not None:
                orientations.add(tuple(round(float(v), 4) for v in orient[0].ImageOrientationPatient))
                break
    if len(orientations) > 1:
        return (
            f"{name}: its frames have {len(orientations)} different {tag_name('ImageOrientationPatient')} values in "
            "PerFrameFunctionalGroupsSequence; one volume needs one orientation"
        )
    if len(positions) != len(set(positions)):
        return (
            f"{name}: {len(positions) - len(set(positions))} frame(s) share an {tag_name('ImagePositionPatient')} in "
            "PerFrameFunctionalGroupsSequence: duplicated slices; split the object or re-export it"
        )
    return ""


def _frame_thickness(ds: pydicom.Dataset):
    """SliceThickness of a multi-frame object, from its shared functional groups when not at top level."""
    if ds.get("SliceThickness") not in (None, ""):
        return ds.SliceThickness
    for group in (ds.get("SharedFunctionalGroupsSequence") or [])[:1]:
        measures = group.get("PixelMeasuresSequence")
        if measures and measures[0].get("SliceThickness") not in (None, ""):
            return measures[0].SliceThickness
    return None


def _geometry(ds: pydicom.Dataset) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(orientation rounded to 1e-4, position) from the header, or None if the values are malformed."""
    try:
        orientation = tuple(round(float(v), 4) for v in ds.ImageOrientationPatient)
        position = tuple(float(v) for v in ds.ImagePositionPatient)
    except (TypeError, ValueError):
        return None
    if len(orientation) != 6 or len(position) != 3 or not np.isfinite(orientation + position).all():
        return None
    return orientation, position


def _missing_tags(ds: pydicom.Dataset, name: str, kind: str) -> str | None:
    """A reason naming the first required tag the file lacks, or None. Only slices of a volume need geometry."""
    needed = ["StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns"]
    if kind == "volume":
        needed += ["ImagePositionPatient", "ImageOrientationPatient"]
    for keyword in needed:
        if ds.get(keyword) in (None, ""):
            placed = "placed in a series volume" if kind == "volume" else "grouped into a series"
            return f"{name}: no {tag_name(keyword)}; this file cannot be {placed} -- fix or remove it"
    return None


def _pixel_problem(fp: BinaryIO, ds: pydicom.Dataset, name: str, size: int, sop_class: str = "") -> str | None:
    """Check, without reading it, that the pixel data is there in full. ``fp`` sits where dcmread stopped."""
    syntax = ds.get("file_meta", {}).get("TransferSyntaxUID")
    if syntax is not None and (syntax.is_compressed or syntax.is_deflated):
        return None  # encapsulated or deflated: sizes cannot be checked from the header
    implicit, little = ds.original_encoding
    start = fp.tell()
    head = fp.read(12)
    endian = "<" if little is not False else ">"
    if not head and sop_class and "Image" not in UID(sop_class).name:
        return (
            f"{name}: not an image -- a {UID(sop_class).name} object with no pixel data; only image objects are "
            "used, move it out of the imaging root to silence this"
        )
    if len(head) < 8 or struct.unpack(endian + "HH", head[:4]) not in _PIXEL_TAGS:
        return (
            f"{name}: truncated or not an image -- no PixelData {tag_name('PixelData')} before the end of the "
            "file; re-export it or remove it"
        )
    if struct.unpack(endian + "HH", head[:4]) != (0x7FE0, 0x0010):
        return None
    if implicit:
        declared, value_start = struct.unpack(endian + "I", head[4:8])[0], start + 8
    elif head[4:6] in _LONG_VRS:
        declared, value_start = struct.unpack(endian + "I", head[8:12])[0], start + 12
    else:
        declared, value_start = struct.unpack(endian + "H", head[6:8])[0], start + 8
    if declared == _UNDEFINED:
        return None
    need = max(_expected_pixel_bytes(ds), declared)
    if size < value_start + need:
        return (
            f"{name}: truncated -- its pixel data needs {need} bytes but only {max(size - value_start, 0)} are in "
            "the file; copy or export it again, or remove it"
        )
    return None


def _expected_pixel_bytes(ds: pydicom.Dataset) -> int:
    """Rows x Columns x SamplesPerPixel x BitsAllocated/8 x NumberOfFrames (0 where a tag is missing)."""
    frames = int(ds.get("NumberOfFrames") or 1)
    bits = int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * int(ds.get("SamplesPerPixel") or 1)
    return (bits * int(ds.get("BitsAllocated") or 0) * frames + 7) // 8


# ------------------------------------------------------------------------------------------ Siemens mosaic

_SIEMENS_MR_CREATOR, _MOSAIC_PRIVATE = (0x0019, 0x0010), (0x0019, 0x100A)  # NumberOfImagesInMosaic, private


def is_mosaic(ds) -> bool:
    """ImageType (0008,0008) holds MOSAIC: a Siemens mosaic, slices tiled in one frame."""
    value = ds.get("ImageType")
    values = [value] if isinstance(value, str | bytes) else list(value or [])
    return any(str(v).strip().upper() == "MOSAIC" for v in values)


def mosaic_count(ds: pydicom.Dataset) -> int:
    """NumberOfImagesInMosaic of a Siemens mosaic: from the CSA image header (0029,1010) (nibabel's reader),
    else the private tag (0019,100A) of the 'SIEMENS MR HEADER' block; 0 when neither says."""
    try:
        from nibabel.nicom import csareader

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n = csareader.get_n_mosaic(csareader.get_csa_header(ds, "image") or {})
        if n:
            return int(n)
    except Exception:  # noqa: BLE001 -- an unparsable CSA header: try the private tag
        pass
    try:
        creator = ds.get(_SIEMENS_MR_CREATOR)
        text = creator.value.decode("latin-1") if isinstance(creator.value, bytes) else str(creator.value)
        element = ds.get(_MOSAIC_PRIVATE) if "SIEMENS" in text.upper() else None
        value = element.value if element is not None else None
        if isinstance(value, bytes):
            return struct.unpack("<H" if ds.original_encoding[1] is not False else ">H", value[:2])[0]
        return _int(value, 0)
    except Exception:  # noqa: BLE001 -- absent or malformed: not known
        return 0


def _mosaic_images(ds: _Header, name: str) -> tuple[int, str | None]:
    """(slices tiled in a Siemens mosaic file, None), (0, None) for any other file, or (0, why it cannot be read)."""
    if not is_mosaic(ds):
        return 0, None
    n = mosaic_count(ds.ds)
    if n <= 0:
        return 0, (
            f"{name}: {tag_name('ImageType')} says MOSAIC (Siemens slices tiled in one frame) but the number of "
            "slices is in neither NumberOfImagesInMosaic of the Siemens CSA header (0029,1010) nor the private tag "
            "(0019,100A); convert the series with dcm2niix or re-export it with one slice per file"
        )
    tiles = math.ceil(math.sqrt(n))
    rows, cols = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    if rows % tiles or cols % tiles:
        return 0, (
            f"{name}: a Siemens mosaic of {n} slices has {tiles} x {tiles} tiles, but its Rows x Columns "
            f"{rows} x {cols} do not divide into them; check NumberOfImagesInMosaic in the CSA header (0029,1010) "
            "or convert the series with dcm2niix"
        )
    return n, None


def read_mosaic(paths: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Siemens mosaic files as one volume: ``(array, affine)``, or None when the first file is not a mosaic.

    Each file is a whole volume (``ceil(sqrt(n))`` tiles per side, the first ``n`` used) rebuilt with nibabel's
    ``MosaicWrapper`` as dcm2niix does: slices along the slice normal (its sign from the CSA header's
    SliceNormalVector when present), ImagePositionPatient corrected from the mosaic's corner to the first tile's.
    Several files (``imaging.volume: mean``) give their voxel-wise mean. ``array`` is float32 ``(columns, rows,
    slices)`` with RescaleSlope/Intercept applied and ``affine`` maps its indices to RAS millimetres: the layout of
    MONAI's PydicomReader, so the rest of the image pipeline treats it like any slice series.
    """
    from nibabel.nicom import csareader
    from nibabel.nicom.dicomwrappers import MosaicWrapper

    total, affine = None, None
    for path in paths:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # noqa: BLE001 -- name the file that failed
            raise ValueError(f"{path}: cannot read the DICOM file ({type(exc).__name__}: {exc})") from None
        if total is None and not is_mosaic(ds):
            return None
        n = mosaic_count(ds)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wrapper = MosaicWrapper(ds, n_mosaic=n or None)
                if csareader.get_slice_normal(wrapper.csa_header) is None:  # no CSA SliceNormalVector: the
                    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])  # DICOM normal, rows x columns
                    wrapper.__dict__["slice_normal"] = np.cross(iop[:3], iop[3:])  # (nibabel: columns x rows)
                data = np.asarray(wrapper.get_data(), dtype=np.float32)  # (rows, columns, slices), rescaled
                lps = np.asarray(wrapper.affine, dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 -- name the file and what is missing
            raise ValueError(
                f"{path}: cannot rebuild the Siemens mosaic ({type(exc).__name__}: {exc}); check "
                f"NumberOfImagesInMosaic (CSA header (0029,1010)), {tag_name('PixelSpacing')} and "
                f"{tag_name('ImageOrientationPatient')}, or convert the series with dcm2niix"
            ) from None
        if total is not None and (data.shape != total.shape or not np.allclose(lps, affine, atol=1e-3)):
            raise ValueError(f"{path}: this mosaic's size or geometry differs from {paths[0]}'s; split the series")
        total, affine = (data, lps) if total is None else (total + data, affine)
    volume = np.ascontiguousarray((total / len(paths)).transpose(1, 0, 2))  # (columns, rows, slices)
    swap = np.eye(4)[[1, 0, 2, 3]]  # index (column, row, slice) -> (row, column, slice)
    return volume, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine @ swap  # LPS -> RAS


# ------------------------------------------------------------------------------------------------ series


def _series_rows(
    groups: Iterable[list[_Slice]], dropped: dict[tuple[str, str, str], int], spec: ImagingSpec, root: Path
) -> list[dict]:
    """One row per series (or single-file image); then, per patient, the preferred usable one is the ``ok`` row.

    Also a skipped row per second copy of an image (same SOPInstanceUID and position in one series) and, for a
    series of several volumes, one for the volumes ``imaging.volume`` leaves out -- so every file is in one row.
    """
    rows = []
    for group in groups:
        first = group[0]
        group, copies = _drop_copies(group, root)
        rows.extend(copies)
        n_dropped = dropped.get((first.patient, first.study, first.series), 0) + len(copies)
        rows.extend(_series_row(group, spec, n_dropped, root))
    _choose(rows, spec.prefer, spec.series_per_patient, root)
    return rows


def _rel(path: str, root: Path) -> str:
    """``path`` relative to the imaging root, printable: how reasons name files and folders."""
    rel = printable(os.path.relpath(path, root))
    return "the imaging root" if rel == "." else rel


def _position(s: _Slice) -> tuple[float, ...]:
    return tuple(round(v, 3) for v in s.position)


def _drop_copies(group: list[_Slice], root: Path) -> tuple[list[_Slice], list[dict]]:
    """The group without second copies of one image (same SOPInstanceUID, same position), and their skipped rows.

    The same image exported twice (another transfer syntax, another folder) is one slice, not a duplicated one:
    an uncompressed copy is used if there is one (else the first by path) and each other copy is recorded as
    skipped, naming the one used.
    """
    kept: dict[tuple, _Slice] = {}
    rows = []
    for s in sorted(group, key=lambda s: (bool(s.syntax) and UID(s.syntax).is_compressed, s.path)):
        key = (s.sop, _position(s), s.kind, s.frames)
        if not s.sop or key not in kept:
            kept.setdefault(key, s)
            continue
        used = kept[key]
        rows.append(_file_row(s.path, (
            f"{_rel(s.path, root)}: another copy of {_rel(used.path, root)} (same {tag_name('SOPInstanceUID')} and "
            f"{tag_name('ImagePositionPatient')} in one series); skipped, {_rel(used.path, root)} is used -- remove "
            "one of them to silence this"
        ), s.patient, s.study, s.series, s.syntax))  # fmt: skip
    keep = {id(s) for s in kept.values()} | {id(s) for s in group if not s.sop}
    return [s for s in group if id(s) in keep], rows


_WHERE = "_where"  # a series row's name for reasons (not a column)
_VOLUME_TAGS = {"temporal": "TemporalPositionIdentifier", "acquisition": "AcquisitionNumber",
                "echo": "EchoNumbers", "bvalue": "DiffusionBValue"}  # fmt: skip
_VOLUME_KEYS = (("temporal", "acquisition", "echo", "bvalue"), ("temporal",), ("echo",), ("bvalue",), ("acquisition",))


def _natural(value: tuple[str, ...]) -> tuple:
    """Sort key of a volume's tag values: numbers by value (2 before 10), then text."""

    def one(v: str) -> tuple:
        try:
            return (0, float(v), "")
        except ValueError:
            return (1, 0.0, v)

    return tuple(one(v) for v in value)


def _same_positions(parts: list[list[_Slice]]) -> bool:
    """Several parts, each with distinct slice positions, all at the same positions: the volumes of one series."""
    if len(parts) < 2:
        return False
    sets = [{_position(s) for s in part} for part in parts]
    return all(len(p) == len(part) for p, part in zip(sets, parts)) and all(p == sets[0] for p in sets)


def split_volumes(group: list[_Slice]) -> tuple[list[list[_Slice]], str]:
    """The volumes of a slice series, each sorted along the slice normal, and what told them apart ('' for one).

    A series whose slice positions repeat (fMRI time points, echoes, diffusion weightings, Siemens mosaics over
    time) is split by TemporalPositionIdentifier / AcquisitionNumber / EchoNumbers / DiffusionBValue, else by the
    order of InstanceNumber (the k-th file at a position belongs to volume k), whichever gives volumes that all
    cover the same positions once. If none does, the series is returned whole, and its duplicated positions are
    reported by the series check.
    """
    ordered = _sort_along_normal(group)
    if len({_position(s) for s in group}) == len(group):
        return [ordered], ""
    for keys in _VOLUME_KEYS:
        parts: dict[tuple[str, ...], list[_Slice]] = defaultdict(list)
        for s in group:
            parts[tuple(getattr(s, k) for k in keys)].append(s)
        if _same_positions(list(parts.values())):
            varying = [k for k in keys if len({getattr(s, k) for s in group}) > 1]
            return (
                [_sort_along_normal(parts[k]) for k in sorted(parts, key=_natural)],
                " and ".join(tag_name(_VOLUME_TAGS[k]) for k in varying),
            )
    repeats: dict[tuple[float, ...], int] = defaultdict(int)
    by_order: dict[int, list[_Slice]] = defaultdict(list)
    for s in sorted(group, key=lambda s: (s.instance, s.path)):
        by_order[repeats[_position(s)]].append(s)
        repeats[_position(s)] += 1
    if _same_positions(list(by_order.values())):
        return (
            [_sort_along_normal(by_order[k]) for k in sorted(by_order)],
            f"repeated {tag_name('ImagePositionPatient')} in {tag_name('InstanceNumber')} order",
        )
    return [ordered], ""


def _where(ordered: list[_Slice], root: Path) -> str:
    """How a reason names a series: its one file, or its folder, size and first file (relative to the root)."""
    first = ordered[0]
    if first.kind == "multiframe":
        return f"multi-frame image {_rel(first.path, root)}"
    if len(ordered) == 1:
        return f"image {_rel(first.path, root)}"
    folder = os.path.commonpath([os.path.dirname(s.path) for s in ordered])
    return f"series of {len(ordered)} files in {_rel(folder, root)} ({os.path.basename(first.path)}, ...)"


def _series_row(group: list[_Slice], spec: ImagingSpec, n_dropped: int, root: Path) -> list[dict]:
    """The row of one series: ``ok`` (usable, so far) or ``skipped`` with the first problem found; plus, for a
    usable series of several volumes, a skipped row for the volumes not used."""
    mixed = len({s.kind for s in group}) > 1  # e.g. one file of a CT series with its Modality emptied
    volume = group[0].kind == "volume" and not mixed
    volumes, told_by = split_volumes(group) if volume else ([sorted(group, key=lambda s: s.path)], "")
    everything = [s for v in volumes for s in v]
    where = _where(everything, root)
    folder = os.path.commonpath([os.path.dirname(s.path) for s in everything])
    first = volumes[0][0]
    problem = _mixed_problem(everything, where) if mixed else _series_problem(volumes, spec, where)
    used, chosen = "1", volumes[0]
    if len(volumes) > 1 and spec.volume == "mean":
        used, chosen = "mean", everything
    elif len(volumes) > 1 and spec.volume != "first":
        used, chosen = str(spec.volume), volumes[min(int(spec.volume), len(volumes)) - 1]
        if int(spec.volume) > len(volumes):
            problem = problem or (
                f"{where}: holds {len(volumes)} volumes (told apart by {told_by}) but imaging.volume is "
                f"{spec.volume}; set imaging.volume to at most {len(volumes)}, 'first' or 'mean'"
            )
    notes = []
    if first.mosaic:
        rows, cols = (n // math.ceil(math.sqrt(first.mosaic)) for n in first.shape)
        notes.append(f"Siemens mosaic: {first.mosaic} slices of {rows} x {cols} tiled in each file")
    if len(volumes) > 1:
        taken = "the voxel-wise mean of all volumes" if used == "mean" else f"volume {used}"
        notes.append(
            f"{len(volumes)} volumes told apart by {told_by}, {len(volumes[0])} file(s) each: {taken} used "
            f"(imaging.volume is {spec.volume!r})"
        )
    if n_dropped and first.kind != "multiframe":
        notes.append(f"{n_dropped} file(s) of this series skipped, see their rows")
    if first.kind == "2d" and len(everything) > 1:
        notes.insert(0, f"2D series of {len(everything)} images: the first is used")
    thickness = [s.thickness for s in everything if np.isfinite(s.thickness)]
    row = {
        Col.PATIENT: first.patient, Col.STUDY_UID: first.study, Col.SERIES_UID: first.series,
        Col.SERIES_DIR: folder, Col.FILES: [s.path for s in (everything if problem else chosen)],
        Col.N_SLICES: _n_slices(volumes[0]), Col.MODALITY_TAG: first.modality, Col.BODY_PART: first.body_part,
        Col.STATUS: Status.SKIPPED.value if problem else Status.OK.value, Col.REASON: problem or "; ".join(notes),
        Col.SOURCE: first.path if first.kind == "multiframe" else folder, Col.IMAGE_KIND: first.kind,
        Col.SOP_UID: [s.sop for s in (everything if problem else chosen)], Col.SYNTAX: first.syntax,
        Col.SLICE_MM: float(np.median(thickness)) if thickness else float("nan"), Col.STUDY_DATE: first.study_date,
        Col.DESCRIPTION: first.description, N_VOLUMES: len(volumes), VOLUME_USED: "" if problem else used,
        _WHERE: where,
    }  # fmt: skip
    if problem or used == "mean" or len(volumes) == 1:
        return [row]
    others = [k for k in range(1, len(volumes) + 1) if str(k) != used]
    unused = [s for k in others for s in volumes[k - 1]]
    listed = ", ".join(map(str, others)) if len(others) <= 5 else f"{others[0]}-{others[-1]} but {used}"
    return [row, {
        **row, Col.FILES: [s.path for s in unused], Col.SOP_UID: [s.sop for s in unused],
        Col.STATUS: Status.SKIPPED.value, VOLUME_USED: "",
        Col.REASON: (
            f"{where}: volume(s) {listed} of {len(volumes)} not used -- imaging.volume is {spec.volume!r}, so volume "
            f"{used} is the series' image; set imaging.volume to 'mean' or another number to use the others"
        ),
    }]  # fmt: skip


def _n_slices(volume: list[_Slice]) -> int:
    """Slices of one volume: a mosaic's tiles, a multi-frame object's frames, else its files."""
    first = volume[0]
    if first.mosaic:
        return first.mosaic
    return first.frames if first.kind == "multiframe" else len(volume)


def _mixed_problem(ordered: list[_Slice], where: str) -> str:
    """The reason for a series whose files disagree on what they are (a volume slice, a 2D image)."""
    modalities = sorted({s.modality or "(empty)" for s in ordered})
    return (
        f"{where}: its files disagree on {tag_name('Modality')} ({', '.join(modalities)}) or "
        f"{tag_name('NumberOfFrames')}, so they cannot make one image; fix the tags or split the series"
    )


def _sort_along_normal(group: list[_Slice]) -> list[_Slice]:
    """Slices ordered by their position along the slice normal (row direction x column direction)."""
    normal = np.cross(group[0].orientation[:3], group[0].orientation[3:])
    return sorted(group, key=lambda s: (float(np.dot(normal, s.position)), s.path))


def _series_problem(volumes: list[list[_Slice]], spec: ImagingSpec, where: str) -> str | None:
    """Why a series cannot make one image, or None. Checks modality, description, geometry and slice count."""
    ordered = [s for v in volumes for s in v]
    first = ordered[0]
    if first.modality not in {m.upper() for m in spec.modalities}:
        return (
            f"{where}: {tag_name('Modality')} is {first.modality or 'empty'!r}, not one of "
            f"{', '.join(spec.modalities)}; add it to imaging.modalities to use it"
        )
    if spec.series_description and not re.search(spec.series_description, first.description, re.IGNORECASE):
        return (
            f"{where}: {tag_name('SeriesDescription')} {first.description!r} does not match "
            f"imaging.series_description {spec.series_description!r}"
        )
    if first.frame_problem:
        return first.frame_problem
    if first.kind == "volume":
        if len({s.orientation for s in ordered}) > 1:
            return (
                f"{where}: slices have {len({s.orientation for s in ordered})} different "
                f"{tag_name('ImageOrientationPatient')} values; keep one orientation per series"
            )
        if len({s.shape for s in ordered}) > 1:
            return (
                f"{where}: slices differ in Rows/Columns {sorted({s.shape for s in ordered})}; keep one size per series"
            )
        if len({s.mosaic for s in ordered}) > 1:
            return (
                f"{where}: its files are not all Siemens mosaics of the same number of slices (NumberOfImagesInMosaic "
                f"{sorted({s.mosaic for s in ordered})}); split the series or convert it with dcm2niix"
            )
        if first.mosaic and len(volumes[0]) > 1:
            return (
                f"{where}: {len(volumes[0])} Siemens mosaic files at different {tag_name('ImagePositionPatient')} in "
                "one volume; a mosaic file is a whole volume -- split the series or convert it with dcm2niix"
            )
        if len(volumes) == 1:
            duplicate = _duplicate_position(ordered, where)
            if duplicate:
                return duplicate
    n = _n_slices(volumes[0])
    single = first.kind == "2d" or (first.kind == "volume" and len(volumes[0]) == 1 and not first.mosaic)
    if not single and n < spec.min_slices:
        return f"{where}: only {n} usable slice(s), imaging.min_slices is {spec.min_slices}"
    return None


def _duplicate_position(ordered: list[_Slice], where: str) -> str | None:
    """A reason naming two files that share an ImagePositionPatient (and nothing tells apart), or None."""
    seen: dict[tuple[float, ...], str] = {}
    for s in ordered:
        key = _position(s)
        if key in seen:
            tags = ", ".join(tag_name(t) for t in _VOLUME_TAGS.values())
            return (
                f"{where}: {os.path.basename(seen[key])} and {os.path.basename(s.path)} share "
                f"{tag_name('ImagePositionPatient')} {list(key)} and cannot be told apart as volumes of a 4D series "
                f"(no {tags} separates them, and not every position repeats equally often): duplicated slices; "
                "remove the duplicate files, or give each volume its own SeriesInstanceUID (0020,000E)"
            )
        seen[key] = s.path
    return None


_PREFERENCES = {
    "most_slices": lambda r: -r[Col.N_SLICES],
    "thinnest": lambda r: r[Col.SLICE_MM] if np.isfinite(r[Col.SLICE_MM]) else np.inf,
    "latest": lambda r: -_int(r[Col.STUDY_DATE], 0),
}
_SAYS = {"most_slices": "most slices", "thinnest": "thinnest slices", "latest": "latest study"}


def _describe(row: dict) -> str:
    thickness = f", {row[Col.SLICE_MM]:g} mm" if np.isfinite(row[Col.SLICE_MM]) else ""
    date = f", study date {row[Col.STUDY_DATE]}" if row[Col.STUDY_DATE] else ""
    return f"{row[Col.N_SLICES]} slices{thickness}{date}"


def _choose(rows: list[dict], prefer: list[str], keep: int = 1, root: Path | None = None) -> None:
    """Keep, per patient, the ``keep`` preferred usable series as ``ok``; mark the others skipped, saying why."""
    usable: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row[Col.STATUS] == Status.OK:
            usable[row[Col.PATIENT]].append(row)
    rule = ", then ".join(_SAYS[p] for p in prefer) or "lowest SeriesInstanceUID"
    for group in usable.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda r: (*(_PREFERENCES[p](r) for p in prefer), r[Col.SERIES_UID], r[Col.SOURCE]))
        best = group[0]
        for rank, row in enumerate(group[:keep], start=1):
            place = f" (#{rank} of the {min(keep, len(group))} kept)" if keep > 1 else ""
            chosen = f"chosen: {rule} ({_describe(row)}) of {len(group)} usable series{place}"
            row[Col.REASON] = "; ".join(filter(None, [chosen, row[Col.REASON]]))
        for row in group[keep:]:
            row[Col.STATUS], row[VOLUME_USED] = Status.SKIPPED.value, ""
            named = row.get(_WHERE) or row[Col.SOURCE]
            best_at = _rel(best[Col.SOURCE], root) if root is not None else best[Col.SOURCE]
            row[Col.REASON] = (
                f"not chosen: {_describe(row)} ({named}); the patient's series in {best_at} ({_describe(best)}) was "
                f"preferred by imaging.prefer ({rule}; ties go to the lower SeriesInstanceUID) and "
                f"imaging.series_per_patient is {keep}"
            )


def _frame(rows: list[dict]) -> pd.DataFrame:
    """The index table, ``ok`` rows first, then by patient and source; the columns exist even when empty.

    Text cells are made printable (a file or folder name that is not UTF-8 shows ``\\xNN``, ``ingest.walk``), so
    every table and report takes them; ``files`` keeps the real paths, the ones to open.
    """
    rows = [{k: printable(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame[Col.N_SLICES] = frame[Col.N_SLICES].astype("int64")
    frame[N_VOLUMES] = frame[N_VOLUMES].astype("int64")
    frame[Col.SLICE_MM] = frame[Col.SLICE_MM].astype("float64")
    order = frame[Col.STATUS].ne(Status.OK.value)
    frame = frame.assign(_order=order).sort_values(["_order", Col.PATIENT, Col.SOURCE], kind="stable")
    frame = frame.drop(columns="_order").reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    return frame
