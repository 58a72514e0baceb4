"""The registered model's input example: one synthetic patient with every input the model was trained on.

Nothing in it comes from a patient: the image is a tiny generated CT series (a bright block in soft tissue) sent as
``dicom_b64`` (base64 DICOM Part-10 files, which any serving machine can read, unlike a path of the training
machine), the note is a made-up pathology sentence, and the omics are every expression feature the model's
genomics preprocessor was fitted on at its training mean (``GenomicsPreprocessor.neutral_values``: a whole panel,
so nothing is imputed and the row's ``omics_measured`` is 1) and two of its mutation genes. A modality the model
was not trained on (no encoder fingerprint, no genomics preprocessor) is left empty, so the example scores with any
clinicmm model.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

EXAMPLE_ID = "example-1"
EXAMPLE_NOTE = (
    "FINAL DIAGNOSIS: invasive adenocarcinoma, moderately differentiated. "
    "IMPRESSION: 3 cm mass in the right upper lobe."
)
DEFAULT_GENES = ("EGFR", "KRAS", "TP53")  # a bundle whose genomics lists no genes (never in practice)
SLICES, SIZE = 4, 16  # the example series: 4 axial slices of 16 x 16 pixels (about 2.5 KB each as Part-10)
_UID_ROOT = "1.2.826.0.1.3680043.8.498.7"  # fixed UIDs: the example is the same bytes every time it is logged


def synthetic_series_b64(slices: int = SLICES, size: int = SIZE) -> list[str]:
    """A synthetic axial CT series as base64 DICOM Part-10 files (soft tissue around a brighter block)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    hu = np.full((size, size), 40.0, dtype=np.float32)
    hu[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 300.0
    out = []
    for z in range(slices):
        uid = f"{_UID_ROOT}.3.{z + 1}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.PatientID, ds.PatientName = EXAMPLE_ID, "Example^Synthetic"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{_UID_ROOT}.1", f"{_UID_ROOT}.2"
        ds.Modality, ds.BodyPartExamined, ds.InstanceNumber = "CT", "CHEST", z + 1
        ds.Rows, ds.Columns = size, size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.PixelData = np.round(hu + 1024).astype("<i2").tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


def _trained_inputs(bundle_dir: Path | None) -> tuple[set[str], dict | None]:
    """(modalities with an encoder fingerprint, the genomics preprocessor's dict or None) of the bundle."""
    if bundle_dir is None:
        return {"image", "note"}, None
    folder = Path(bundle_dir)
    meta = json.loads((folder / "model.json").read_text())
    genomics = folder / "genomics.json"
    return {m for m, f in (meta.get("fingerprints") or {}).items() if f}, (
        json.loads(genomics.read_text()) if genomics.is_file() else None
    )


def input_example(bundle_dir: Path | None = None) -> pd.DataFrame:
    """One synthetic row with every modality the bundle in ``bundle_dir`` was trained on (without a bundle: image
    and note): ``dicom_b64`` + ``body_part``, ``notes``, ``expression`` and ``mutations``; the other columns empty."""
    from clinicmm.serve.scoring import INPUT_COLUMNS

    encoded, genomics = _trained_inputs(bundle_dir)
    row = dict.fromkeys(INPUT_COLUMNS, "") | {"patient_id": EXAMPLE_ID}
    if "image" in encoded:
        row |= {"dicom_b64": json.dumps(synthetic_series_b64()), "body_part": "CHEST"}
    if "note" in encoded:
        row["notes"] = json.dumps([EXAMPLE_NOTE])
    if genomics is not None:
        from clinicmm.encode.genomics import GenomicsPreprocessor

        pre = GenomicsPreprocessor.from_dict(genomics)
        mutated = pre.mutation_genes[:2]
        row["expression"] = json.dumps(pre.neutral_values() or dict.fromkeys(DEFAULT_GENES, 1.0))
        if mutated:
            row["mutations"] = json.dumps(mutated)
    return pd.DataFrame([row])
