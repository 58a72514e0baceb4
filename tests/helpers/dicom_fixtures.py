"""Tiny synthetic CT series written with pydicom, for the imaging and DICOM-index tests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

INTERCEPT = -1024.0


def write_slice(
    path: Path,
    hu: np.ndarray,
    z: float,
    patient: str | None = "P1",
    study: str = "1.2.826.0.1.3680043.8.498.1",
    series: str = "1.2.826.0.1.3680043.8.498.2",
    instance: int = 1,
    modality: str = "CT",
    body_part: str = "CHEST",
    spacing: float = 1.0,
) -> Path:
    """One axial CT slice (int16 stored values, intercept -1024) whose rescaled values are ``hu``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    if patient is not None:
        ds.PatientID = patient
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.BodyPartExamined = study, series, modality, body_part
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, INTERCEPT
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.PixelSpacing, ds.SliceThickness = [spacing, spacing], spacing
    ds.PixelData = np.round(hu - INTERCEPT).astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    volume: np.ndarray,
    suffix: str = ".dcm",
    shuffle: bool = True,
    **tags,
) -> list[Path]:
    """A series from a (z, y, x) HU volume; instance numbers deliberately do not follow z when ``shuffle``."""
    series = tags.pop("series", None) or generate_uid()
    n = volume.shape[0]
    order = np.random.default_rng(0).permutation(n) if shuffle else np.arange(n)
    paths = []
    for k in range(n):
        name = folder / f"slice{int(order[k]):03d}{suffix}"
        paths.append(write_slice(name, volume[k], z=2.0 * k, series=series, instance=int(order[k]) + 1, **tags))
    return paths


def uniform(hu: float, shape: tuple[int, int, int] = (8, 32, 32)) -> np.ndarray:
    return np.full(shape, hu, dtype=np.float32)


def body(kind: str, shape: tuple[int, int, int] = (8, 32, 32)) -> np.ndarray:
    """A crude chest-like (dark lungs either side) or abdomen-like (soft tissue, bright blob) volume."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    vol = np.full(shape, -1000.0, dtype=np.float32)
    inside = (x**2 + y**2) < 0.85
    vol[inside] = 40.0
    if kind == "chest":
        vol[inside & (((x - 0.4) ** 2 + y**2) < 0.1)] = -800.0
        vol[inside & (((x + 0.4) ** 2 + y**2) < 0.1)] = -800.0
    else:
        vol[inside & (((x - 0.3) ** 2 + (y - 0.2) ** 2 + z**2) < 0.15)] = 200.0
    return vol


def truncate(path: Path, drop: int = 40) -> None:
    """Cut the last ``drop`` bytes off a file, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - drop])


# ----------------------------------------------------------------------- MR: 4D series and Siemens mosaics

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def write_image(
    path: Path,
    pixels: np.ndarray,
    position: tuple[float, float, float] | np.ndarray,
    orientation: tuple[float, ...] = AXIAL,
    spacing: tuple[float, float] = (1.0, 1.0),
    patient: str = "P1",
    study: str = "1.2.826.0.1.3680043.8.498.1",
    series: str = "1.2.826.0.1.3680043.8.498.3",
    instance: int = 1,
    modality: str = "MR",
    sop: str | None = None,
    **tags,
) -> Path:
    """One MR image (int16 stored values, no rescaling) at a given position and orientation; ``tags``: any
    further DICOM keywords (TemporalPositionIdentifier, EchoNumbers, ImageType, ...) set as given."""
    from pydicom.uid import MRImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = patient, study, series, modality
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.ImagePositionPatient = [round(float(v), 4) for v in position]
    ds.PixelSpacing = [float(v) for v in spacing]
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.round(pixels).astype("<i2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def slice_positions(
    first: tuple[float, float, float], orientation: tuple[float, ...], n: int, gap: float
) -> np.ndarray:
    """(n, 3) positions of n slices ``gap`` mm apart along the DICOM slice normal (row cosines x column cosines)."""
    normal = np.cross(orientation[:3], orientation[3:])
    return np.asarray(first, dtype=float) + gap * np.arange(n)[:, None] * normal


def write_4d(
    folder: Path,
    volumes: np.ndarray,
    tag: str | None = "TemporalPositionIdentifier",
    first: tuple[float, float, float] = (-10.0, -20.0, 5.0),
    gap: float = 3.0,
    interleave: bool = False,
    **kwargs,
) -> list[list[Path]]:
    """A (T, S, rows, cols) series: T volumes of S slices at the same positions, one file per slice.

    ``tag`` (TemporalPositionIdentifier, EchoNumbers, AcquisitionNumber, ...) numbers the volumes 1..T; None
    leaves them apart only by InstanceNumber order, time point after time point (a GE fMRI export); with
    ``interleave`` InstanceNumber runs slice by slice instead (every volume of slice 1, then of slice 2, ...), so
    only the tag can tell the volumes apart. Returns the files, per volume, per slice.
    """
    n_volumes, n_slices = volumes.shape[:2]
    positions = slice_positions(first, kwargs.get("orientation", AXIAL), n_slices, gap)
    series = kwargs.pop("series", None) or generate_uid()
    out = []
    for t in range(n_volumes):
        files = []
        for k in range(n_slices):
            instance = k * n_volumes + t + 1 if interleave else t * n_slices + k + 1
            tags = {tag: t + 1} if tag else {}
            files.append(write_image(folder / f"IM{instance:04d}", volumes[t, k], positions[k], series=series,
                                     instance=instance, SpacingBetweenSlices=gap, **tags, **kwargs))  # fmt: skip
        out.append(files)
    return out


def csa_header(tags: dict[str, tuple[str, list[str]]]) -> bytes:
    """A Siemens CSA2 ('SV10') header holding ``{name: (vr, values)}``, as in (0029,1010) of Siemens MR files."""
    import struct

    out = b"SV10" + b"\x04\x03\x02\x01" + struct.pack("<2I", len(tags), 77)
    for name, (vr, values) in tags.items():
        out += struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0, len(values), 77)
        for value in values:
            data = value.encode() + b"\x00"
            out += struct.pack("<4i", len(data), len(data), 77, len(data)) + data + b"\x00" * (-len(data) % 4)
    return out


def mosaic_frame(volume: np.ndarray) -> np.ndarray:
    """(n, rows, cols) slices tiled row by row into one ``ceil(sqrt(n))``-tiles-per-side frame, the rest zero."""
    n, rows, cols = volume.shape
    tiles = int(np.ceil(np.sqrt(n)))
    frame = np.zeros((tiles * rows, tiles * cols), dtype=volume.dtype)
    for k in range(n):
        r, c = divmod(k, tiles)
        frame[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols] = volume[k]
    return frame


def write_mosaic(
    path: Path,
    volume: np.ndarray,
    first: tuple[float, float, float],
    orientation: tuple[float, ...] = AXIAL,
    spacing: tuple[float, float] = (1.0, 1.0),
    gap: float = 3.0,
    count: str = "csa",
    **kwargs,
) -> Path:
    """A Siemens mosaic of the (n, rows, cols) ``volume`` whose slice k lies at ``first`` + k ``gap`` along the normal.

    As the scanner writes it: ImageType holds MOSAIC, ImagePositionPatient is the corner of the whole mosaic (the
    first slice's position moved back by (tiles - 1) / 2 tile sizes along rows and columns), and the number of
    slices is in the CSA image header (``count='csa'``, with the SliceNormalVector), in the private tag (0019,100A)
    (``count='private'``) or nowhere (``count='none'``).
    """
    n, rows, cols = volume.shape
    tiles = int(np.ceil(np.sqrt(n)))
    row_dir, col_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    corner = (
        np.asarray(first, dtype=float)
        - (tiles - 1) * rows / 2 * spacing[0] * col_dir
        - (tiles - 1) * cols / 2 * spacing[1] * row_dir
    )
    path = write_image(path, mosaic_frame(volume), corner, orientation, spacing, SpacingBetweenSlices=gap,
                       ImageType=["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"], **kwargs)  # fmt: skip
    import pydicom

    ds = pydicom.dcmread(path)
    if count == "csa":
        normal = np.cross(row_dir, col_dir)
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", csa_header({
            "NumberOfImagesInMosaic": ("IS", [str(n)]), "SliceNormalVector": ("FD", [f"{v:.8f}" for v in normal]),
        }))  # fmt: skip
    elif count == "private":
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0A, "US", n)
    ds.save_as(path, enforce_file_format=True)
    return path


def count_dicom_reads(monkeypatch) -> Counter:
    """Count ``pydicom.dcmread`` calls per path from now on (the counter fills as files are read)."""
    import pydicom

    reads: Counter = Counter()
    dcmread = pydicom.dcmread

    def counting(source, *args, **kwargs):
        reads[str(source)] += 1
        return dcmread(source, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    return reads
