"""Real scanner exports: 4D series (time points, echoes), Siemens mosaics, defaults that take ordinary data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_fixtures import (  # noqa: E402
    slice_positions,
    uniform,
    write_4d,
    write_image,
    write_mosaic,
    write_series,
    write_slice,
)

from clinicmm.config import ImagingSpec  # noqa: E402
from clinicmm.ingest.dicom import N_VOLUMES, VOLUME_USED, index_dicom  # noqa: E402
from clinicmm.keys import Col, Status  # noqa: E402

T, S, ROWS, COLS = 3, 4, 6, 8
# an oblique plane (30 degrees about z, tilted 20 degrees) and non-square slices: a swapped axis or a wrong sign shows
_A, _B = np.deg2rad(30), np.deg2rad(20)
OBLIQUE = tuple(
    round(float(v), 6)
    for v in (np.cos(_A), np.sin(_A), 0.0, -np.sin(_A) * np.cos(_B), np.cos(_A) * np.cos(_B), np.sin(_B))
)


def _volumes(seed: int = 0, shape: tuple[int, ...] = (T, S, ROWS, COLS)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, shape).astype(np.float32)


def _index(root: Path, **spec) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return index_dicom(ImagingSpec(root=root, **spec), root)


def _ok(index: pd.DataFrame) -> pd.Series:
    ok = index[index[Col.STATUS] == Status.OK]
    assert len(ok) == 1, index[[Col.STATUS, Col.REASON]].to_string()
    return ok.iloc[0]


def _load(files) -> tuple[np.ndarray, np.ndarray]:
    """The image loader of the encoder (before reorientation): channel-first array and affine."""
    from clinicmm.encode.imaging.transforms import load_dicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = load_dicom("image")({"image": [str(f) for f in files]})["image"]
    return image.numpy(), image.affine.numpy()


def _every_file_once(index: pd.DataFrame, root: Path) -> None:
    listed = sorted(f for files in index[Col.FILES] for f in files)
    assert listed == sorted(str(p) for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------- 4D


@pytest.fixture(scope="module")
def fmri(tmp_path_factory) -> tuple[Path, np.ndarray, list[list[Path]]]:
    root = tmp_path_factory.mktemp("fmri")
    volumes = _volumes()
    return root, volumes, write_4d(root / "bold", volumes, tag="TemporalPositionIdentifier")


def test_time_series_loads_as_volumes_not_duplicates(fmri) -> None:
    root, _, files = fmri
    index = _index(root)
    row = _ok(index)
    assert row[N_VOLUMES] == T and row[VOLUME_USED] == "1" and row[Col.N_SLICES] == S
    assert row[Col.FILES] == [str(f) for f in files[0]]  # the first time point, along the slice normal
    assert "TemporalPositionIdentifier (0020,0100)" in row[Col.REASON] and "volume 1 used" in row[Col.REASON]
    unused = index[index[Col.STATUS] == Status.SKIPPED].iloc[0]
    assert sorted(unused[Col.FILES]) == sorted(str(f) for f in files[1] + files[2])
    assert "not used" in unused[Col.REASON] and "imaging.volume" in unused[Col.REASON]
    _every_file_once(index, root)


def test_first_mean_and_nth_volume_give_the_right_arrays(fmri) -> None:
    root, volumes, files = fmri
    reference = [_load(files[t])[0] for t in range(T)]  # each time point alone, as a plain series
    for t in range(T):  # the plain series holds the source slices: (1, columns, rows, slices)
        np.testing.assert_array_equal(reference[t][0], volumes[t].transpose(2, 1, 0))
    for choice, expected in (("first", reference[0]), (2, reference[1]), (3, reference[2]),
                             ("mean", np.mean(reference, axis=0))):  # fmt: skip
        row = _ok(_index(root, volume=choice))
        assert row[VOLUME_USED] == ("1" if choice == "first" else str(choice))
        array, affine = _load(row[Col.FILES])
        np.testing.assert_allclose(array, expected, rtol=1e-6)
        np.testing.assert_allclose(affine, _load(files[0])[1])
    mean = _ok(_index(root, volume="mean"))
    assert len(mean[Col.FILES]) == T * S and mean[Col.N_SLICES] == S


def test_volume_beyond_the_series_is_a_reason(fmri) -> None:
    root, _, _ = fmri
    index = _index(root, volume=T + 1)
    assert not (index[Col.STATUS] == Status.OK).any()
    reason = index[Col.REASON].iloc[0]
    assert f"holds {T} volumes" in reason and f"imaging.volume is {T + 1}" in reason and "bold" in reason


def test_time_points_in_instance_order_without_tags(tmp_path: Path) -> None:
    """A GE EPI export: no TemporalPositionIdentifier, time point after time point in InstanceNumber."""
    volumes = _volumes(1)
    files = write_4d(tmp_path / "epi", volumes, tag=None)
    row = _ok(_index(tmp_path, volume=2))
    assert row[N_VOLUMES] == T and row[Col.FILES] == [str(f) for f in files[1]]
    assert "InstanceNumber (0020,0013) order" in row[Col.REASON]
    np.testing.assert_array_equal(_load(row[Col.FILES])[0][0], volumes[1].transpose(2, 1, 0))


@pytest.mark.parametrize(
    "tag",
    ["TemporalPositionIdentifier (0020,0100)", "AcquisitionNumber (0020,0012)", "EchoNumbers (0018,0086)",
     "DiffusionBValue (0018,9087)"],
)  # fmt: skip
def test_volumes_are_told_apart_by_their_tag_not_by_instance_order(tmp_path: Path, tag: str) -> None:
    """Echoes, b-values, time points with InstanceNumber running slice by slice: only the tag tells them apart."""
    volumes = _volumes(2, (3, S, ROWS, COLS))
    files = write_4d(tmp_path / "me", volumes, tag=tag.split()[0], interleave=True)
    row = _ok(_index(tmp_path, volume=2))
    assert row[N_VOLUMES] == 3 and row[Col.FILES] == [str(f) for f in files[1]]
    assert f"told apart by {tag}," in row[Col.REASON]


def test_real_duplicates_are_still_quarantined_with_the_files_named(tmp_path: Path) -> None:
    vol = uniform(0.0, (5, 8, 8))
    dup = write_series(tmp_path / "PC" / "dup", vol, patient="PC", shuffle=False)
    series = str(pydicom.dcmread(dup[0], stop_before_pixels=True).SeriesInstanceUID)
    write_slice(tmp_path / "PC" / "dup" / "extra.dcm", vol[0] + 5, z=4.0, patient="PC", series=series)
    index = _index(tmp_path)
    assert not (index[Col.STATUS] == Status.OK).any()
    reason = index[Col.REASON].iloc[0]
    assert "extra.dcm" in reason and "slice002.dcm" in reason and "PC/dup" in reason
    assert "TemporalPositionIdentifier (0020,0100)" in reason and "duplicated slices" in reason
    assert str(tmp_path) not in reason  # named relative to the imaging root


def test_second_copy_of_an_image_is_skipped_naming_both(tmp_path: Path) -> None:
    """The same SOP instance twice (e.g. once compressed, once not): one image, the copy recorded."""
    sop = pydicom.uid.generate_uid()
    write_image(tmp_path / "a" / "img.dcm", _volumes(3, (ROWS, COLS)), (0.0, 0.0, 0.0), sop=sop)
    write_image(tmp_path / "b" / "img.dcm", _volumes(3, (ROWS, COLS)), (0.0, 0.0, 0.0), sop=sop)
    index = _index(tmp_path)
    row = _ok(index)
    assert row[Col.FILES] == [str(tmp_path / "a" / "img.dcm")]
    copy = index[index[Col.SOURCE] == str(tmp_path / "b" / "img.dcm")].iloc[0]
    assert copy[Col.STATUS] == Status.SKIPPED and "another copy of a/img.dcm" in copy[Col.REASON]
    assert "a/img.dcm is used" in copy[Col.REASON]
    assert "b/img.dcm" in copy[Col.REASON] and "SOPInstanceUID (0008,0018)" in copy[Col.REASON]
    _every_file_once(index, tmp_path)


def test_an_uncompressed_copy_is_preferred(tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    sop = pydicom.uid.generate_uid()
    pixels = _volumes(3, (ROWS, COLS))
    packed = write_image(tmp_path / "a" / "img.dcm", pixels, (0.0, 0.0, 0.0), sop=sop)
    ds = pydicom.dcmread(packed)
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.save_as(packed)
    write_image(tmp_path / "b" / "img.dcm", pixels, (0.0, 0.0, 0.0), sop=sop)
    index = _index(tmp_path)
    assert _ok(index)[Col.FILES] == [str(tmp_path / "b" / "img.dcm")]
    copy = index[index[Col.SOURCE] == str(packed)].iloc[0]
    assert copy[Col.REASON].startswith("a/img.dcm: another copy of b/img.dcm")


# -------------------------------------------------------------------------------------------- mosaic


@pytest.mark.parametrize("count", ["csa", "private"])
def test_mosaic_rebuilds_the_source_slices_and_their_geometry(tmp_path: Path, count: str) -> None:
    volume = _volumes(4, (5, ROWS, COLS))  # 5 slices: 3 x 3 tiles, the last 4 empty
    first, spacing, gap = (-10.0, 20.0, 30.0), (1.5, 2.0), 3.0
    scale = {"RescaleSlope": 2.0, "RescaleIntercept": -100.0}
    mosaic = write_mosaic(tmp_path / "m" / "mosaic.dcm", volume, first, OBLIQUE, spacing, gap, count=count, **scale)
    assert pydicom.dcmread(mosaic).pixel_array.shape == (3 * ROWS, 3 * COLS)
    row = _ok(_index(tmp_path / "m"))
    assert row[Col.N_SLICES] == 5 and row[N_VOLUMES] == 1 and row[Col.FILES] == [str(mosaic)]
    assert f"Siemens mosaic: 5 slices of {ROWS} x {COLS}" in row[Col.REASON]
    array, affine = _load(row[Col.FILES])
    assert array.shape == (1, COLS, ROWS, 5)
    for k in range(5):  # voxel for voxel: slice k of the rebuilt volume is source slice k
        np.testing.assert_array_equal(array[0, :, :, k].T, volume[k] * 2.0 - 100.0)
    positions = slice_positions(first, OBLIQUE, 5, gap)
    ras = np.array([-1.0, -1.0, 1.0])
    for k in range(5):  # voxel (0, 0, k) lies at slice k's ImagePositionPatient (LPS -> RAS)
        np.testing.assert_allclose((affine @ [0, 0, k, 1])[:3], positions[k] * ras, atol=1e-3)
    np.testing.assert_allclose(affine[:3, 0], np.asarray(OBLIQUE[:3]) * ras * spacing[1], atol=1e-5)
    np.testing.assert_allclose(affine[:3, 1], np.asarray(OBLIQUE[3:]) * ras * spacing[0], atol=1e-5)
    plain = [write_image(tmp_path / "p" / f"s{k}.dcm", volume[k], positions[k], OBLIQUE, spacing, instance=k + 1,
                         SpacingBetweenSlices=gap, **scale) for k in range(5)]  # fmt: skip
    plain_array, plain_affine = _load(plain)  # the same slices stored one per file: the same image
    np.testing.assert_array_equal(array, plain_array)
    np.testing.assert_allclose(affine, plain_affine, atol=1e-4)


def test_mosaic_time_series_is_volumes_of_one_file(tmp_path: Path) -> None:
    volumes = _volumes(5, (T, 5, ROWS, COLS))
    series = pydicom.uid.generate_uid()
    files = [write_mosaic(tmp_path / f"MR{t:03d}.dcm", volumes[t], (0.0, 0.0, 0.0), series=series,
                          AcquisitionNumber=t + 1, instance=t + 1) for t in range(T)]  # fmt: skip
    index = _index(tmp_path, volume="mean")
    row = _ok(index)
    assert row[N_VOLUMES] == T and row[Col.N_SLICES] == 5 and row[VOLUME_USED] == "mean"
    assert "AcquisitionNumber (0020,0012)" in row[Col.REASON]
    array, _ = _load(row[Col.FILES])
    np.testing.assert_allclose(array[0], volumes.mean(axis=0).transpose(2, 1, 0), rtol=1e-6)
    second = _ok(_index(tmp_path, volume=2))
    assert second[Col.FILES] == [str(files[1])]


def test_mosaic_without_a_slice_count_names_the_file_and_tags(tmp_path: Path) -> None:
    write_mosaic(tmp_path / "s" / "mosaic.dcm", _volumes(6, (5, ROWS, COLS)), (0.0, 0.0, 0.0), count="none")
    index = _index(tmp_path)
    assert not (index[Col.STATUS] == Status.OK).any()
    reason = index.loc[index[Col.SOURCE] == str(tmp_path / "s" / "mosaic.dcm"), Col.REASON].iloc[0]
    assert reason.startswith("s/mosaic.dcm: ImageType (0008,0008) says MOSAIC")
    assert "(0029,1010)" in reason and "(0019,100A)" in reason and "dcm2niix" in reason


# ------------------------------------------------------------------------------------------ defaults


def test_defaults_take_ordinary_data(tmp_path: Path) -> None:
    """A 3-slice CT, a one-file CT, a US image and a DX image are all usable with the default spec."""
    write_series(tmp_path / "ct3", uniform(0.0, (3, 8, 8)), patient="P3")
    write_series(tmp_path / "ct1", uniform(0.0, (1, 8, 8)), patient="P1")
    write_slice(tmp_path / "us.dcm", uniform(0.0, (1, 8, 8))[0], z=0.0, patient="PU", modality="US")
    write_slice(tmp_path / "dx.dcm", uniform(0.0, (1, 8, 8))[0], z=0.0, patient="PD", modality="DX")
    index = _index(tmp_path)
    assert sorted(index.loc[index[Col.STATUS] == Status.OK, Col.PATIENT]) == ["P1", "P3", "PD", "PU"]
    strict = _index(tmp_path, min_slices=4)  # min_slices rejects short volumes only, never a single image
    assert sorted(strict.loc[strict[Col.STATUS] == Status.OK, Col.PATIENT]) == ["P1", "PD", "PU"]
    short = strict[strict[Col.PATIENT] == "P3"].iloc[0]
    assert "only 3 usable slice(s), imaging.min_slices is 4" in short[Col.REASON]


def test_single_file_per_patient_with_default_grouping(tmp_path: Path) -> None:
    """Each patient one image, all at the same position, several sharing a folder: one usable image each."""
    for p in range(4):
        write_image(tmp_path / "flat" / f"p{p}.dcm", _volumes(p, (ROWS, COLS)), (0.0, 0.0, 0.0), patient=f"P{p}",
                    series=pydicom.uid.generate_uid())  # fmt: skip
    index = _index(tmp_path)
    assert sorted(index.loc[index[Col.STATUS] == Status.OK, Col.PATIENT]) == ["P0", "P1", "P2", "P3"]


def test_single_file_series_in_one_folder_each_name_their_file(tmp_path: Path) -> None:
    for p in range(9):
        write_slice(tmp_path / "export" / f"IMG{p:04d}", uniform(0.0, (1, 8, 8))[0], z=0.0, patient="P",
                    series=pydicom.uid.generate_uid(), modality="SR")  # fmt: skip
    index = _index(tmp_path)
    reasons = list(index[Col.REASON])
    assert len(reasons) == 9 and len(set(reasons)) == 9
    for p in range(9):
        assert any(r.startswith(f"image export/IMG{p:04d}: Modality (0008,0060) is 'SR'") for r in reasons)


def test_two_series_of_one_patient_the_not_chosen_one_is_named(tmp_path: Path) -> None:
    write_series(tmp_path / "long", uniform(0.0, (5, 8, 8)), patient="P")
    write_series(tmp_path / "short", uniform(0.0, (3, 8, 8)), patient="P")
    index = _index(tmp_path)
    other = index[index[Col.STATUS] == Status.SKIPPED].iloc[0]
    assert other[Col.REASON].startswith("not chosen: 3 slices") and "short" in other[Col.REASON]
    assert "series in long" in other[Col.REASON] and str(tmp_path) not in other[Col.REASON]
