"""The pipeline's direct path for 2D images gives exactly what its MONAI steps give, and reads each file once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_fixtures import body, count_dicom_reads, write_series  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundMultiFrameImageStorage, generate_uid

from clinicmm.config import ImageEncoderSpec
from clinicmm.encode.imaging.encoder import ImageEncoder
from clinicmm.encode.imaging.transforms import image_pipeline


def _write(path: Path, pixels: np.ndarray, modality: str = "US", colour: bool = False, **tags) -> list[str]:
    """One single-file 2D object: ``pixels`` (rows, columns), (frames, rows, columns) or RGB (..., 3) uint16/uint8."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = UltrasoundMultiFrameImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "P1", modality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    if colour:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        data = pixels.astype(np.uint8)
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        data = pixels.astype("<u2")
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = data.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return [str(path)]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("direct2d")
    rng = np.random.default_rng(0)
    return {
        "same size": _write(root / "a.dcm", rng.integers(0, 1000, (32, 32))),
        "small": _write(root / "b.dcm", rng.integers(0, 4000, (28, 28)), PixelSpacing=[0.3, 0.3]),
        "wide": _write(root / "c.dcm", rng.integers(0, 4000, (17, 45))),  # odd pad: the extra row after
        "tall": _write(root / "d.dcm", rng.integers(0, 4000, (70, 33)), modality="DX"),
        "rescaled": _write(
            root / "e.dcm",
            rng.integers(0, 4000, (40, 40)),
            modality="CR",
            RescaleSlope=2.5,
            RescaleIntercept=-1024,
            RescaleType="US",
        ),  # fmt: skip
        "cine": _write(root / "f.dcm", rng.integers(0, 4000, (5, 24, 36))),
        "colour": _write(root / "g.dcm", rng.integers(0, 255, (30, 40, 3)), colour=True),
        "constant": _write(root / "h.dcm", np.full((16, 16), 7)),
        "large": _write(root / "i.dcm", rng.integers(0, 4000, (1030, 1000))),  # > 1M pixels: numpy's percentile
    }


@pytest.mark.parametrize(
    "spec",
    [
        ImageEncoderSpec(spatial_size=(8, 32, 32)),
        ImageEncoderSpec(spatial_size=(4, 28, 28), spatial_dims=2, percentiles=(5.0, 95.0)),
        ImageEncoderSpec(spatial_size=(4, 24, 40), spatial_dims=3),
    ],
    ids=["auto", "2", "3"],
)
def test_the_direct_path_equals_the_monai_steps_element_for_element(images: dict, spec: ImageEncoderSpec) -> None:
    from monai.transforms import Compose

    pipeline = image_pipeline(spec)
    steps = Compose(pipeline.transforms)  # the same transforms, run one by one as before the direct path
    for name, files in images.items():
        with pytest.warns(Warning, match="Divide by zero") if name == "constant" else _nothing():
            fast = pipeline({"image": files, "label": 1})
        with pytest.warns(Warning, match="Divide by zero") if name == "constant" else _nothing():
            slow = steps({"image": files, "label": 1})
        assert type(fast["image"]) is torch.Tensor and fast["image"].dtype == torch.float32, name
        assert fast["image"].shape == slow["image"].shape, name
        assert torch.equal(fast["image"], slow["image"].as_tensor() if hasattr(slow["image"], "as_tensor")
                           else slow["image"]), name  # fmt: skip
        assert {k: v for k, v in fast.items() if k != "image"} == {k: v for k, v in slow.items() if k != "image"}


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


def test_every_file_is_read_once_and_volumes_still_take_the_monai_steps(tmp_path, images, monkeypatch) -> None:
    volume = [str(p) for p in write_series(tmp_path / "ct", body("chest", (6, 32, 32)), patient="ct")]
    reads = count_dicom_reads(monkeypatch)
    pipeline = image_pipeline(ImageEncoderSpec(spatial_size=(8, 32, 32)))
    assert pipeline({"image": images["small"]})["image"].shape == (1, 1, 32, 32)
    assert reads == {images["small"][0]: 1}
    reads.clear()
    out = pipeline({"image": volume})
    assert out["image"].shape == (1, 8, 32, 32) and out["image_kind"] == "volume" and "_dicom_head" not in out
    assert reads == dict.fromkeys(volume, 1) | {volume[0]: 2}  # the header once more: the series reader's own read


def test_a_bad_2d_file_names_itself_as_before(tmp_path) -> None:
    path = tmp_path / "bad.dcm"
    path.write_bytes(b"not a dicom file")
    encoder = ImageEncoder(ImageEncoderSpec(spatial_size=(8, 32, 32)))
    out, failed = encoder.encode([[str(path)]], progress=False)
    assert np.isnan(out).all() and str(path) in failed[0] and "cannot read the DICOM file" in failed[0]
