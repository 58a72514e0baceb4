"""LoadDicomd reads a 2D or multi-frame object once: the header it inspects is the dataset whose pixels it loads."""

from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import count_dicom_reads
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from clinicmm.encode.imaging.transforms import DEFER_BYTES, load_dicom


def _write_object(path: Path, modality: str, sop_class: str, frames: int, size: int) -> np.ndarray:
    """A single-file image object (``frames`` > 1: multi-frame) whose pixel data is larger than ``DEFER_BYTES``."""
    pixels = np.random.default_rng(frames).integers(0, 4000, (frames, size, size), dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "P1", modality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows = ds.Columns = size
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    assert len(ds.PixelData) > DEFER_BYTES  # the pixel data is the deferred value the test is about
    return pixels


@pytest.mark.parametrize(
    ("modality", "sop_class", "frames", "kind"),
    [("DX", DigitalXRayImageStorageForPresentation, 1, "2d"), ("CT", EnhancedCTImageStorage, 4, "multiframe")],
)
def test_a_single_file_object_is_read_once_and_gives_its_own_pixels(
    tmp_path, monkeypatch, modality, sop_class, frames, kind
):
    path = tmp_path / f"{kind}.dcm"
    stored = _write_object(path, modality, sop_class, frames, 192)
    reads = count_dicom_reads(monkeypatch)
    out = load_dicom("image")({"image": [str(path)]})
    assert reads == {str(path): 1}
    assert out["image_kind"] == kind and out["modality"] == modality
    image = out["image"].numpy()  # (1, x, y, z): columns, rows, frames
    assert image.shape == (1, 192, 192, frames)
    np.testing.assert_array_equal(image[0].transpose(2, 1, 0), stored.astype(np.float32))
    assert np.diag(out["image"].affine.numpy())[:2].tolist() == [0.5, 0.5]
