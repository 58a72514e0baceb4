"""Tiny synthetic CT series written with pydicom, for the imaging and DICOM-index tests."""

from __future__ import annotations

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
