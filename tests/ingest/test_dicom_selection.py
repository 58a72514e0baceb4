"""Series selection rules from the dataset spec, parallel header scans, and the spooled index."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import uniform, write_series  # noqa: E402

from clinicmm.config import ImagingSpec  # noqa: E402
from clinicmm.errors import ConfigError  # noqa: E402
from clinicmm.ingest.dicom import index_dicom  # noqa: E402
from clinicmm.keys import Col, Status  # noqa: E402


def _tag(paths: list[Path], **values) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Patient P: a 6-slice 5 mm 'SCOUT' in 2019, a 5-slice 1 mm 'AXIAL' in 2020, a 5-slice 2 mm 'AXIAL' in 2021."""
    root = tmp_path_factory.mktemp("selection")
    _tag(
        write_series(root / "scout", uniform(0.0, (6, 8, 8)), patient="P"),
        SliceThickness=5.0,
        StudyDate="20190101",
        SeriesDescription="SCOUT",
    )
    _tag(
        write_series(root / "thin", uniform(0.0, (5, 8, 8)), patient="P"),
        SliceThickness=1.0,
        StudyDate="20200101",
        SeriesDescription="AXIAL 1mm",
    )
    _tag(
        write_series(root / "late", uniform(0.0, (5, 8, 8)), patient="P"),
        SliceThickness=2.0,
        StudyDate="20210101",
        SeriesDescription="Axial 2mm",
    )
    return root


def _chosen(root: Path, **spec) -> str:
    index = index_dicom(ImagingSpec(root=root, **spec), root)
    ok = index[index[Col.STATUS] == Status.OK]
    assert len(ok) == 1
    return Path(ok[Col.SOURCE].iloc[0]).name


def test_default_prefers_most_slices(root) -> None:
    assert _chosen(root) == "scout"


@pytest.mark.parametrize(
    ("prefer", "expected"), [(["thinnest"], "thin"), (["latest"], "late"), (["most_slices", "latest"], "scout")]
)
def test_preferences_in_order(root, prefer, expected) -> None:
    assert _chosen(root, prefer=prefer) == expected


def test_description_pattern_and_the_reason_recorded(root) -> None:
    index = index_dicom(ImagingSpec(root=root, series_description=r"^axial", prefer=["latest"]), root)
    by_folder = {Path(s).name: r for s, r in zip(index[Col.SOURCE], index.to_dict("records"))}
    assert by_folder["late"][Col.STATUS] == Status.OK and by_folder["late"][Col.REASON].startswith(
        "chosen: latest study"
    )
    assert "does not match imaging.series_description '^axial'" in by_folder["scout"][Col.REASON]
    assert by_folder["thin"][Col.REASON].startswith("not chosen: 5 slices, 1 mm, study date 20200101")


def test_a_bad_pattern_is_a_config_error(root) -> None:
    with pytest.raises(ConfigError, match="series_description"):
        index_dicom(ImagingSpec(root=root, series_description="(unclosed"), root)


def test_two_workers_give_the_same_index(root, tmp_path) -> None:
    one = index_dicom(ImagingSpec(root=root), root)
    two = index_dicom(ImagingSpec(root=root, workers=2), root, spool=tmp_path)
    assert one.to_dict("records") == two.to_dict("records")
    assert list(tmp_path.iterdir()) == [], "the spooled index is removed after the scan"


def test_several_series_per_patient_are_kept_in_preference_order(root) -> None:
    index = index_dicom(ImagingSpec(root=root, series_per_patient=2, prefer=["thinnest"]), root)
    ok = index[index[Col.STATUS] == Status.OK]
    reasons = {Path(s).name: r for s, r in zip(ok[Col.SOURCE], ok[Col.REASON])}
    assert set(reasons) == {"thin", "late"}
    assert "(#1 of the 2 kept)" in reasons["thin"] and "(#2 of the 2 kept)" in reasons["late"]
    scout = index[index[Col.SOURCE].str.endswith("scout")].iloc[0]
    assert scout[Col.STATUS] == Status.SKIPPED and "series_per_patient is 2" in scout[Col.REASON]


class _Encoder:
    """Stands in for ImageEncoder: a series' embedding is its file count; a series named 'bad' fails."""

    dim = 2

    def fingerprint(self) -> str:
        return "stub"

    def encode(self, series):
        import numpy as np

        out = np.array([[len(s), 1.0] for s in series], dtype=np.float32)
        failed = {i: "bad series" for i, s in enumerate(series) if "bad" in s[0]}
        out[list(failed)] = np.nan
        return out, failed


def test_several_series_embeddings_are_averaged_and_a_patient_fails_only_when_all_fail(tmp_path) -> None:
    import numpy as np

    from clinicmm.config import EncodersSpec
    from clinicmm.encode.featurizer import Featurizer
    from clinicmm.knowledge.graph import KnowledgeGraph

    files = {}
    for name, n in (("a", 2), ("b", 4), ("bad", 3), ("bad2", 1)):
        files[name] = []
        for k in range(n):
            path = tmp_path / name / f"{k}.dcm"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(f"{name}{k}".encode())
            files[name].append(str(path))
    featurizer = Featurizer(EncodersSpec(), KnowledgeGraph.default())
    featurizer._image = _Encoder()
    series = [[files["a"], files["b"]], files["a"], [files["bad"], files["b"]], [files["bad"], files["bad2"]], None]
    vectors, _, info = featurizer.images(series, ["CHEST"] * 5)
    assert vectors[0].tolist() == [3.0, 1.0]  # mean of 2 and 4 files
    assert vectors[1].tolist() == [2.0, 1.0]
    assert vectors[2].tolist() == [4.0, 1.0]  # the bad series left out, the good one kept
    assert np.isnan(vectors[3]).all() and "bad series" in info["failures"][3]
    assert np.isnan(vectors[4]).all() and set(info["failures"]) == {3}
