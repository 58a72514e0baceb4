"""Find the DICOM series under an imaging root and pick one usable series per patient.

Only headers are read (``stop_before_pixels=True``), so indexing thousands of files takes seconds. Every file
under the root ends up either in the ``files`` of an ``ok`` series row or in a ``skipped`` row whose ``reason``
says what is wrong with it (file, DICOM tag) and how to fix it -- nothing is dropped silently.
"""

from __future__ import annotations

import os
import struct
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from tqdm.auto import tqdm

from clinicmm.config import ImagingSpec
from clinicmm.errors import ConfigError, InputError
from clinicmm.keys import Col, Status

COLUMNS: tuple[str, ...] = tuple(str(c) for c in (
    Col.PATIENT, Col.STUDY_UID, Col.SERIES_UID, Col.SERIES_DIR, Col.FILES, Col.N_SLICES,
    Col.MODALITY_TAG, Col.BODY_PART, Col.STATUS, Col.REASON, Col.SOURCE,
))  # fmt: skip
PROGRESS_MIN_FILES = 500  # show a progress bar from this many files on
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class _Slice:
    """The header facts of one good image file that grouping and the geometry checks need."""

    path: str
    patient: str
    study: str
    series: str
    modality: str
    body_part: str
    orientation: tuple[float, ...]
    position: tuple[float, ...]
    shape: tuple[int, int]


def tag_name(keyword: str) -> str:
    """``PatientID (0010,0020)``: a keyword with its tag, for messages."""
    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def index_dicom(spec: ImagingSpec, root: Path) -> pd.DataFrame:
    """Index every file under ``root`` (the resolved ``spec.root``): one ``ok`` row per patient's chosen series.

    Columns (``COLUMNS``): patient_id, study_uid, series_uid, series_dir, files (absolute paths; for a series
    sorted along the slice normal), n_slices (0 on file rows), dicom_modality, body_part (BodyPartExamined,
    upper case), status ('ok' / 'skipped'), reason, source (the file of a file row, the folder of a series row).
    Rows: one per series (usable or not) and one per file that could not join a series; ``ok`` rows first.
    """
    if tag_for_keyword(spec.patient_tag) is None:
        raise ConfigError(
            f"imaging.patient_tag: {spec.patient_tag!r} is not a DICOM keyword. Use a keyword such as 'PatientID'."
        )
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: the imaging root is not a folder. Fix imaging.root in the dataset YAML.")
    paths = _list_files(root)
    rows: list[dict] = []
    slices: list[_Slice] = []
    bar = tqdm(paths, desc="Indexing DICOM", unit="file", file=sys.stderr, disable=None if len(paths) >= PROGRESS_MIN_FILES else True)
    for path in bar:
        found = _read_slice(path, root, spec.patient_tag)
        if isinstance(found, _Slice):
            slices.append(found)
        else:
            rows.append(found)
    rows.extend(_series_rows(slices, rows, spec))
    return _frame(rows)


# ------------------------------------------------------------------------------------------------- files


def _list_files(root: Path) -> list[str]:
    """Absolute paths of all non-hidden files below ``root`` (hidden folders are not entered), sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.abspath(os.path.join(folder, f)) for f in sorted(files) if not f.startswith("."))
    return found


def _file_row(path: str, reason: str, patient: str = "", study: str = "", series: str = "") -> dict:
    return {
        Col.PATIENT: patient, Col.STUDY_UID: study, Col.SERIES_UID: series, Col.SERIES_DIR: os.path.dirname(path),
        Col.FILES: [path], Col.N_SLICES: 0, Col.MODALITY_TAG: "", Col.BODY_PART: "",
        Col.STATUS: Status.SKIPPED.value, Col.REASON: reason, Col.SOURCE: path,
    }  # fmt: skip


def _read_slice(path: str, root: Path, patient_tag: str) -> _Slice | dict:
    """The slice facts of one file, or a skipped file row saying why it cannot be used."""
    name = os.path.relpath(path, root)
    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            problem = _pixel_problem(fp, ds, name, os.path.getsize(path))
    except InvalidDicomError:
        return _file_row(
            path, f"{name}: not a DICOM file (no 'DICM' preamble); remove it or move it out of the imaging root"
        )
    except Exception as exc:  # noqa: BLE001 -- any unreadable header is recorded, never fatal
        reason = f"{name}: unreadable DICOM header, truncated or corrupt ({type(exc).__name__}: {exc}); re-export it"
        return _file_row(path, reason)
    ids = {"patient": str(ds.get(patient_tag, "") or "").strip(), "study": str(ds.get("StudyInstanceUID", "")),
           "series": str(ds.get("SeriesInstanceUID", ""))}  # fmt: skip
    if not problem and not ids["patient"]:
        problem = f"{name}: no patient id in {tag_name(patient_tag)}; fill the tag or remove the file"
    problem = problem or _missing_tags(ds, name)
    geometry = None if problem else _geometry(ds)
    if geometry is None:
        problem = problem or (
            f"{name}: {tag_name('ImageOrientationPatient')} needs 6 numbers and {tag_name('ImagePositionPatient')} "
            "3 finite numbers; fix the tags or remove the file"
        )
        return _file_row(path, problem, **ids)
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    modality = str(ds.get("Modality", "") or "").strip().upper()
    shape = (int(ds.Rows), int(ds.Columns))
    return _Slice(path, ids["patient"], ids["study"], ids["series"], modality, body_part, *geometry, shape)


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


def _missing_tags(ds: pydicom.Dataset, name: str) -> str | None:
    """A reason naming the first required tag the file lacks, or None."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns", "ImagePositionPatient",
                    "ImageOrientationPatient"):  # fmt: skip
        if ds.get(keyword) in (None, ""):
            return f"{name}: no {tag_name(keyword)}; this file cannot be placed in a series volume -- fix or remove it"
    return None


def _pixel_problem(fp: BinaryIO, ds: pydicom.Dataset, name: str, size: int) -> str | None:
    """Check, without reading it, that the pixel data is there in full. ``fp`` sits where dcmread stopped."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and (syntax.is_compressed or syntax.is_deflated):
        return None  # encapsulated or deflated: sizes cannot be checked from the header
    implicit, little = ds.original_encoding
    start = fp.tell()
    head = fp.read(12)
    endian = "<" if little is not False else ">"
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


# ------------------------------------------------------------------------------------------------ series


def _series_rows(slices: list[_Slice], file_rows: list[dict], spec: ImagingSpec) -> list[dict]:
    """One row per series; then, per patient, the usable series with most slices is the one ``ok`` row."""
    groups: dict[tuple[str, str, str], list[_Slice]] = defaultdict(list)
    for s in slices:
        groups[(s.patient, s.study, s.series)].append(s)
    dropped = defaultdict(int)
    for row in file_rows:
        dropped[(row[Col.PATIENT], row[Col.STUDY_UID], row[Col.SERIES_UID])] += 1
    rows = [_series_row(group, spec, dropped[key]) for key, group in sorted(groups.items())]
    _choose(rows)
    return rows


def _series_row(group: list[_Slice], spec: ImagingSpec, n_dropped: int) -> dict:
    """The row of one series: ``ok`` (usable, so far) or ``skipped`` with the first problem found."""
    ordered = _sort_along_normal(group)
    files = [s.path for s in ordered]
    folder = os.path.commonpath([os.path.dirname(f) for f in files])
    first = ordered[0]
    problem = _series_problem(ordered, spec, folder)
    note = f"{n_dropped} file(s) of this series skipped, see their rows" if n_dropped else ""
    return {
        Col.PATIENT: first.patient, Col.STUDY_UID: first.study, Col.SERIES_UID: first.series,
        Col.SERIES_DIR: folder, Col.FILES: files, Col.N_SLICES: len(files), Col.MODALITY_TAG: first.modality,
        Col.BODY_PART: first.body_part, Col.STATUS: Status.SKIPPED.value if problem else Status.OK.value,
        Col.REASON: problem or note, Col.SOURCE: folder,
    }  # fmt: skip


def _sort_along_normal(group: list[_Slice]) -> list[_Slice]:
    """Slices ordered by their position along the slice normal (row direction x column direction)."""
    normal = np.cross(group[0].orientation[:3], group[0].orientation[3:])
    return sorted(group, key=lambda s: (float(np.dot(normal, s.position)), s.path))


def _series_problem(ordered: list[_Slice], spec: ImagingSpec, folder: str) -> str | None:
    """Why a series cannot make one volume, or None. Checks modality, geometry and slice count."""
    first = ordered[0]
    where = f"series in {folder}"
    if first.modality not in {m.upper() for m in spec.modalities}:
        return (
            f"{where}: {tag_name('Modality')} is {first.modality or 'empty'!r}, not one of "
            f"{', '.join(spec.modalities)}; add it to imaging.modalities to use it"
        )
    if len({s.orientation for s in ordered}) > 1:
        return (
            f"{where}: slices have {len({s.orientation for s in ordered})} different "
            f"{tag_name('ImageOrientationPatient')} values; keep one orientation per series"
        )
    if len({s.shape for s in ordered}) > 1:
        return f"{where}: slices differ in Rows/Columns {sorted({s.shape for s in ordered})}; keep one size per series"
    duplicate = _duplicate_position(ordered)
    if duplicate:
        return duplicate
    if len(ordered) < spec.min_slices:
        return f"{where}: only {len(ordered)} usable slice(s), imaging.min_slices is {spec.min_slices}"
    return None


def _duplicate_position(ordered: list[_Slice]) -> str | None:
    """A reason naming two files that share an ImagePositionPatient, or None."""
    seen: dict[tuple[float, ...], str] = {}
    for s in ordered:
        key = tuple(round(v, 3) for v in s.position)
        if key in seen:
            return (
                f"{os.path.basename(seen[key])} and {os.path.basename(s.path)} (series in "
                f"{os.path.dirname(s.path)}) share {tag_name('ImagePositionPatient')} {list(key)}: duplicated slices; "
                "remove the duplicates or split the series"
            )
        seen[key] = s.path
    return None


def _choose(rows: list[dict]) -> None:
    """Keep, per patient, the usable series with the most slices as ``ok``; mark the other usable ones skipped."""
    usable: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row[Col.STATUS] == Status.OK:
            usable[row[Col.PATIENT]].append(row)
    for group in usable.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda r: (-r[Col.N_SLICES], r[Col.SERIES_UID]))
        best = group[0]
        chosen = f"chosen: most slices ({best[Col.N_SLICES]}) of {len(group)} usable series"
        best[Col.REASON] = "; ".join(filter(None, [chosen, best[Col.REASON]]))
        for row in group[1:]:
            row[Col.STATUS] = Status.SKIPPED.value
            row[Col.REASON] = (
                f"not chosen: {row[Col.N_SLICES]} slices; the patient's series in {best[Col.SERIES_DIR]} with "
                f"{best[Col.N_SLICES]} slices was chosen (most slices; ties go to the lower SeriesInstanceUID)"
            )


def _frame(rows: list[dict]) -> pd.DataFrame:
    """The index table, ``ok`` rows first, then by patient and source; the columns exist even when empty."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame[Col.N_SLICES] = frame[Col.N_SLICES].astype("int64")
    order = frame[Col.STATUS].ne(Status.OK.value)
    frame = frame.assign(_order=order).sort_values(["_order", Col.PATIENT, Col.SOURCE], kind="stable")
    frame = frame.drop(columns="_order").reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    return frame
