"""The imaging path on DICOM that no one here wrote: pydicom's bundled test files and the pydicom-data corpus.

For every file: indexed into a usable image or skipped with a reason; for every usable image: decoded through
the MONAI pipeline or quarantined with a reason naming the series -- and the run never crashes.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from clinicmm.config import ImageEncoderSpec, ImagingSpec
from clinicmm.errors import InputError
from clinicmm.ingest.dicom import _list_files, index_dicom
from clinicmm.keys import Col, Status

ALL_MODALITIES = ["CT", "MR", "PT", "NM", "CR", "DX", "MG", "US", "OT", "XA", "RF", "SC", "IO", "PX"]


def _corpus_roots() -> list[Path]:
    roots = [Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"]
    spec = importlib.util.find_spec("data_store")  # the pydicom-data package (a test extra)
    if spec is not None and spec.origin:
        roots.append(Path(spec.origin).parent / "data")
    return [r for r in roots if r.is_dir()]


ROOTS = _corpus_roots()


@pytest.fixture(scope="module", params=ROOTS, ids=[r.parent.name for r in ROOTS])
def corpus(request) -> tuple[Path, object]:
    """(root, index) with every modality allowed and one slice enough, as for a mixed PACS export."""
    root = request.param
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return root, index_dicom(ImagingSpec(root=root, modalities=ALL_MODALITIES, min_slices=1), root)


def test_pydicom_data_is_installed_as_a_test_extra() -> None:
    assert len(ROOTS) == 2, "pip install -e '.[dev]' installs pydicom-data, the second corpus"


def test_every_file_is_in_exactly_one_row_and_every_skip_says_why(corpus) -> None:
    root, index = corpus
    seen = [f for files in index[Col.FILES] for f in files]
    assert sorted(seen) == sorted(_list_files(root)), "a file is missing from the index or counted twice"
    skipped = index[index[Col.STATUS] == Status.SKIPPED]
    assert (skipped[Col.REASON].str.len() > 20).all()
    for _, row in skipped[skipped[Col.N_SLICES] == 0].iterrows():  # file rows name their file
        assert os.path.relpath(row[Col.SOURCE], root) in row[Col.REASON]
    assert (index[Col.STATUS] == Status.OK).sum() >= 3


def test_non_images_are_recognised_for_what_they_are(corpus) -> None:
    root, index = corpus
    reasons = " | ".join(index[Col.REASON])
    if root.name == "test_files":
        assert "a DICOMDIR (media directory)" in reasons
        assert "not an image -- a Basic Text SR Storage object" in reasons
        assert "not a DICOM file" in reasons
    kinds = set(index.loc[index[Col.STATUS] == Status.OK, Col.IMAGE_KIND])
    assert {"volume", "2d"} <= kinds


def test_loaded_plus_quarantined_equals_files_seen(corpus, one_thread) -> None:
    """Every usable series through the real MONAI pipeline: each file ends up loaded or quarantined."""
    from clinicmm.encode.imaging.encoder import ImageEncoder

    root, index = corpus
    encoder = ImageEncoder(ImageEncoderSpec(spatial_size=(4, 16, 16)))
    loaded, quarantined = 0, int(index.loc[index[Col.STATUS] == Status.SKIPPED, Col.FILES].map(len).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        usable = index[index[Col.STATUS] == Status.OK]
        for files, kind in zip(usable[Col.FILES], usable[Col.IMAGE_KIND], strict=True):
            try:
                out = encoder.preprocess(list(files))
            except InputError as exc:
                assert "could not be loaded" in str(exc)
                quarantined += len(files)
                continue
            loaded += len(files)
            # spatial_dims auto: a 2D image is one native slice, a volume or multi-frame series 4 slices
            assert out.shape == ((1, 1, 16, 16) if kind == "2d" else (1, 4, 16, 16)) and np.isfinite(out.numpy()).all()
            assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert loaded + quarantined == len(_list_files(root))
    assert loaded >= 3


def _compressed_image_files() -> list[tuple[Path, str]]:
    found = []
    for root in ROOTS:
        for path in _list_files(root):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                syntax = ds.file_meta.TransferSyntaxUID
            except Exception:  # noqa: BLE001 -- not DICOM or no meta: not a codec case
                continue
            if (syntax.is_compressed or syntax.is_deflated) and "Image" in UID(str(ds.get("SOPClassUID", ""))).name:
                found.append((Path(path), syntax.name))
    return found


def test_every_compressed_transfer_syntax_decodes_or_names_itself(one_thread) -> None:
    """JPEG (baseline, extended, lossless), JPEG-LS, JPEG 2000, RLE, deflate: through the pipeline's reader."""
    from clinicmm.encode.imaging.transforms import _read_object

    decoded, failures = {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, name in _compressed_image_files():
            try:
                pixels, _ = _read_object(str(path))
            except ValueError as exc:
                assert str(path) in str(exc) and "transfer syntax" in str(exc)
                failures.append(name)
                continue
            assert pixels.ndim == 3 and np.isfinite(pixels).all()
            decoded[name] = decoded.get(name, 0) + 1
    families = ["JPEG Baseline", "JPEG Extended", "JPEG Lossless", "JPEG-LS Lossless", "JPEG-LS Lossy",
                "JPEG 2000 Image Compression (Lossless Only)", "JPEG 2000 Image Compression", "RLE Lossless",
                "Deflated"]  # fmt: skip
    for family in families:
        assert any(n.startswith(family) for n in decoded), f"nothing in {family} decoded; decoded: {decoded}"
    assert sum(decoded.values()) > 3 * len(failures), (decoded, failures)


def test_a_syntax_without_decoder_is_quarantined_with_its_name(tmp_path) -> None:
    """An MPEG-2 video object: pydicom has no pixel decoder for it, so the index quarantines it by name."""
    source = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files" / "CT_small.dcm"
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 Main Profile / Main Level
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    (tmp_path / "v").mkdir()
    ds.save_as(tmp_path / "v" / "video.dcm", enforce_file_format=True)
    index = index_dicom(ImagingSpec(root=tmp_path, min_slices=1), tmp_path)
    assert list(index[Col.STATUS]) == [Status.SKIPPED]
    reason = index[Col.REASON].iloc[0]
    assert "quarantined" in reason and "MPEG2 Main Profile / Main Level" in reason and "v/video.dcm" in reason
