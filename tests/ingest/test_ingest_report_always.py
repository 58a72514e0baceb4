"""An ingest with no usable patient still writes its report and indexes, and the terminal shows the reasons."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from dicom_fixtures import uniform, write_slice  # noqa: E402

from clinicmm.config import DatasetSpec, ImagingSpec  # noqa: E402
from clinicmm.errors import InputError  # noqa: E402
from clinicmm.ingest.cohort import SHOWN_REASONS, ingest  # noqa: E402

N_BAD = SHOWN_REASONS + 5


def _unusable(root: Path) -> None:
    """N_BAD files no one can use: text files, and a DICOM image of a modality the spec leaves out."""
    for k in range(N_BAD - 1):
        (root / "export").mkdir(parents=True, exist_ok=True)
        (root / "export" / f"note{k:02d}.txt").write_text("not an image\n")
    write_slice(root / "export" / "sr.dcm", uniform(0.0, (1, 8, 8))[0], z=0.0, patient="P1", modality="SR")


def test_no_usable_patient_still_writes_the_report(tmp_path: Path) -> None:
    _unusable(tmp_path / "img")
    out = tmp_path / "out"
    out.mkdir()
    (out / "cohort.parquet").write_bytes(b"from an earlier ingest")
    spec = DatasetSpec(name="t", imaging=ImagingSpec(root=Path("img")), base_dir=tmp_path)
    with pytest.raises(InputError) as info:
        ingest(spec, out)
    message = str(info.value)
    assert f"the first {SHOWN_REASONS} of {N_BAD}" in message and "... and 5 more skipped input(s)" in message
    assert message.count("\n- [image]") == SHOWN_REASONS and str(out / "report.md") in message
    report = (out / "report.md").read_text()
    assert "Ingest failed: no usable patient found" in report
    for k in range(N_BAD - 1):  # every reason, each naming its file relative to the imaging root
        assert f"export/note{k:02d}.txt: not a DICOM file" in report
    assert "image export/sr.dcm: Modality (0008,0060) is 'SR'" in report
    series = pd.read_parquet(out / "series.parquet")
    assert len(series) == N_BAD and (series["status"] == "skipped").all()
    assert (out / "report.json").is_file()
    assert not (out / "cohort.parquet").exists()  # a failed ingest is never taken for a cohort


def test_cli_prints_the_tags_and_how_many_more(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from clinicmm.cli import app

    _unusable(tmp_path / "img")
    (tmp_path / "dataset.yaml").write_text("name: t\nimaging:\n  root: img\n")
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "dataset.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())  # rich may wrap long lines
    assert "- [image] " in text  # not eaten as rich markup
    assert "... and 5 more skipped input(s)" in text
    assert (tmp_path / "out" / "report.md").is_file()
