"""Synthetic CT series for the demo cohort: HU volumes whose anatomy shows the body site, written as DICOM.

Everything in a volume comes from the type's *site* (``design.SITES``) plus patient noise, never from its
histology or programme, so the image alone separates chest / abdomen / neck and nothing finer. The site is in the
pixels only: no ``BodyPartExamined`` is written (a header naming the site would link the image to the site's graph
concept for free). Lesions are faint (``LESION_CONTRAST`` of their attenuation, none in ``NO_LESION_RATE`` of the
series) under ``NOISE_HU`` of noise. Files are
byte-reproducible: UIDs are hashed from the seed and patient (``generate_uid(entropy_srcs=...)``), dates are
fixed offsets from a constant day, and no wall-clock time is read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from clinicmm.demo.design import SITES, Site

BASE_DATE = dt.date(2021, 3, 1)  # every demo date is an offset from this day
FOV_MM = {"chest": 360.0, "abdomen": 400.0, "neck": 240.0}  # in-plane field of view per site
NOISE_HU = 35.0
LESION_CONTRAST = 0.5  # share of the lesion's attenuation blended in at its centre
NO_LESION_RATE = 0.15  # series whose lesion is not visible
AIR_HU, SOFT_HU, BONE_HU = -1000.0, 40.0, 450.0
NAMES = (
    "Doe^Jane",
    "Doe^John",
    "Roe^Richard",
    "Roe^Mary",
    "Smith^Alex",
    "Moreau^Claire",
    "Tanaka^Yuki",
    "Okafor^Chidi",
    "Novak^Petra",
    "Silva^Ana",
    "Larsen^Erik",
    "Kowalski^Jan",
    "Haddad^Lina",
    "Mensah^Kofi",
)
PHYSICIANS = ("Grey^Meredith", "House^Gregory", "Kildare^James", "Quinn^Michaela", "Ross^Doug")
LAYOUTS = ("study/series", "series", "study/series/nosuffix")  # folder nesting variants of real exports


@dataclass(frozen=True)
class SeriesMeta:
    """The per-series DICOM attributes shared by every slice."""

    patient_id: str
    name: str
    sex: str
    birth_date: str
    study_date: str
    study_time: str
    accession: str
    physician: str
    study_id: str
    series_number: int
    study_uid: str
    series_uid: str
    frame_uid: str
    spacing: float  # mm per pixel in-plane
    thickness: float  # mm between slices
    uid_key: tuple[str, ...]  # entropy for per-slice SOP Instance UIDs


def uid(*parts: object) -> str:
    """A reproducible DICOM UID hashed from ``parts``."""
    return str(generate_uid(entropy_srcs=["clinicmm-demo", *map(str, parts)]))


def date_str(offset_days: int) -> str:
    """DICOM DA string ``offset_days`` after :data:`BASE_DATE`."""
    return (BASE_DATE + dt.timedelta(days=int(offset_days))).strftime("%Y%m%d")


def series_meta(patient_id: str, site: str, seed: int, size: int, day: int, rng: np.random.Generator) -> SeriesMeta:
    """Draw the patient's demographics and acquisition; only the spacing (the site's field of view) depends on
    ``site``."""
    num = int(patient_id.rsplit("-", 1)[-1])
    key = (str(seed), patient_id)
    birth = BASE_DATE - dt.timedelta(days=int(rng.integers(40 * 365, 85 * 365)))
    return SeriesMeta(
        patient_id=patient_id,
        name=NAMES[int(rng.integers(len(NAMES)))],
        sex=str(rng.choice(["F", "M"])),
        birth_date=birth.strftime("%Y%m%d"),
        study_date=date_str(day),
        study_time=f"{int(rng.integers(7, 18)):02d}{int(rng.integers(0, 60)):02d}00",
        accession=f"ACC{seed % 1000:03d}{num:05d}",
        physician=PHYSICIANS[int(rng.integers(len(PHYSICIANS)))],
        study_id=str(int(rng.integers(1, 9999))),
        series_number=int(rng.integers(2, 6)),
        study_uid=uid(*key, "study"),
        series_uid=uid(*key, "series"),
        frame_uid=uid(*key, "frame"),
        spacing=round(FOV_MM[site] / size, 4),
        thickness=float(rng.choice([2.5, 3.0, 5.0])),
        uid_key=key,
    )


# ------------------------------------------------------------------------------------------ pixel data


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _anatomy(site: Site, x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    """One axial slice in HU: air, a body ellipse and the site's interior (lungs / liver / airway), a spine."""
    hu = np.full(x.shape, AIR_HU)
    if site.name == "chest":
        hu[_ellipse(x, y, 0, 0, 0.85 * scale, 0.62 * scale)] = SOFT_HU
        for side in (-1, 1):  # two lung fields, mediastinum left between them
            hu[_ellipse(x, y, side * 0.42 * scale, -0.05, 0.3 * scale, 0.45 * scale)] = site.background_hu
        hu[_ellipse(x, y, 0, 0.45 * scale, 0.1, 0.1)] = BONE_HU
    elif site.name == "abdomen":
        hu[_ellipse(x, y, 0, 0, 0.9 * scale, 0.68 * scale)] = site.background_hu
        hu[_ellipse(x, y, -0.45 * scale, -0.15, 0.35 * scale, 0.35 * scale)] = site.background_hu + 25  # liver
        hu[_ellipse(x, y, 0, 0.5 * scale, 0.11, 0.11)] = BONE_HU
    else:  # neck
        hu[_ellipse(x, y, 0, 0, 0.55 * scale, 0.5 * scale)] = site.background_hu
        hu[_ellipse(x, y, 0, 0.15, 0.07, 0.07)] = AIR_HU  # airway
        hu[_ellipse(x, y, 0, 0.34 * scale, 0.12, 0.12)] = BONE_HU
    return hu


def _lesion(shape: tuple[int, int, int], site: Site, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Soft-edged ellipsoid weight in [0, 1] at the site's place (jittered by 0.05), and its HU (±20%)."""
    slices, size, _ = shape
    centre = np.asarray(site.lesion_centre) + rng.uniform(-0.05, 0.05, 3)
    radius = site.lesion_radius * rng.uniform(0.8, 1.2)
    z, y, x = ((np.arange(n) + 0.5) / n for n in (slices, size, size))
    dist = np.sqrt(
        ((z[:, None, None] - centre[0]) / 2.0) ** 2
        + (y[None, :, None] - centre[1]) ** 2
        + (x[None, None, :] - centre[2]) ** 2
    )
    weight = np.clip((radius - dist) / (0.15 * radius), 0.0, 1.0)
    return weight, site.lesion_hu * rng.uniform(0.8, 1.2)


def ct_volume(site_name: str, slices: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (slices, size, size) uint16 volume of stored values (HU + 1024, clipped to 12 bits)."""
    site = SITES[site_name]
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(coords, coords)
    body = rng.uniform(0.92, 1.06)
    shift = rng.uniform(-0.03, 0.03, 2)
    xs, ys = x - shift[0], y - shift[1]
    scales = body * (0.9 + 0.1 * np.sin(np.pi * (np.arange(slices) + 0.5) / slices))
    hu = np.stack([_anatomy(site, xs, ys, s) for s in scales])
    weight, lesion_hu = _lesion(hu.shape, site, rng)
    weight = weight * (0.0 if rng.random() < NO_LESION_RATE else LESION_CONTRAST)
    hu = hu * (1 - weight) + lesion_hu * weight
    hu += rng.normal(0.0, NOISE_HU, hu.shape)
    return np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)


# ------------------------------------------------------------------------------------------- writing


def _file_meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _set_patient_study(ds: Dataset, m: SeriesMeta) -> None:
    ds.PatientName = m.name
    ds.PatientID = m.patient_id
    ds.PatientBirthDate = m.birth_date
    ds.PatientSex = m.sex
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = m.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = m.study_time
    ds.AccessionNumber = m.accession
    ds.ReferringPhysicianName = m.physician
    ds.StudyID = m.study_id
    ds.StudyInstanceUID = m.study_uid
    ds.SeriesInstanceUID = m.series_uid
    ds.FrameOfReferenceUID = m.frame_uid
    ds.SeriesNumber = m.series_number
    ds.Modality = "CT"
    ds.Manufacturer = "clinicmm synthetic"
    ds.StudyDescription = "CT WITH CONTRAST"
    ds.SeriesDescription = "AXIAL"


def _set_geometry_pixels(ds: Dataset, m: SeriesMeta, k: int, pixels: np.ndarray) -> None:
    rows, cols = pixels.shape
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = k + 1
    first = [round((1 - n) * m.spacing / 2, 4) for n in (cols, rows)]  # first pixel's centre; volume centred on 0
    ds.ImagePositionPatient = [*first, round(k * m.thickness, 3)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = round(k * m.thickness, 3)
    ds.PixelSpacing = [m.spacing, m.spacing]
    ds.SliceThickness = ds.SpacingBetweenSlices = m.thickness
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = pixels.astype("<u2").tobytes()


def slice_dataset(m: SeriesMeta, k: int, pixels: np.ndarray) -> Dataset:
    """Slice ``k`` (0-based) of the series as a complete CT Image Storage dataset."""
    sop_uid = uid(*m.uid_key, "sop", k)
    ds = Dataset()
    ds.file_meta = _file_meta(sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    _set_patient_study(ds, m)
    _set_geometry_pixels(ds, m, k, pixels)
    return ds


def series_folder(root: Path, m: SeriesMeta, layout: str) -> Path:
    """Where the series goes: ``root/<patient>/[<study>/]<series>``."""
    series = f"series_{m.series_number:03d}_AXIAL"
    if layout.startswith("study/"):
        return root / m.patient_id / f"study_{m.study_date}_{m.accession}" / series
    return root / m.patient_id / series


def write_series(root: Path, m: SeriesMeta, volume: np.ndarray, layout: str) -> list[Path]:
    """Write one file per slice; return the paths in slice order."""
    folder = series_folder(root, m, layout)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, pixels in enumerate(volume):
        name = f"IM{k + 1:05d}" if layout.endswith("nosuffix") else f"{k + 1}.dcm"
        path = folder / name
        slice_dataset(m, k, pixels).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def truncate(path: Path) -> None:
    """Cut a file to half its bytes (a transfer that stopped midway)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
