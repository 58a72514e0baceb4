"""write_prediction_sr / write_sr_for_predictions: Comprehensive SR (TID 1500) filed into the source study, read
back with highdicom to find every item: image references, prediction, probabilities, conformal set, decision,
modality shares."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_fixtures import uniform, write_series  # noqa: E402
from pydicom.uid import ComprehensiveSRStorage

from clinicmm.config import ImagingSpec  # noqa: E402
from clinicmm.demo.generator import generate_demo  # noqa: E402
from clinicmm.errors import InputError  # noqa: E402
from clinicmm.ingest.dicom import index_dicom  # noqa: E402
from clinicmm.serve.dicom_sr import write_prediction_sr, write_sr_for_predictions  # noqa: E402

PROBS = {"LUAD": 0.625, "LUSC": 0.25, "STAD": 0.0625, "KIRP": 0.03125, "HNSC": 0.03125, "THCA": 0.0}
IMPRESSION, DIFFERENTIAL, PROBABILITY = "121073", "111023", "122157"
RESULT = {
    "prediction_set": ["LUAD", "LUSC"],
    "decision": "abstain: refer for review",
    "shares": {"image": 0.25, "note": 0.5, "omics": 0.25},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny demo cohort (full patient/study headers) and its DICOM index's ok rows, by patient."""
    out = tmp_path_factory.mktemp("demo")
    generate_demo(out, patients=6, slices=4, size=16)
    root = out / "dicom"
    index = index_dicom(ImagingSpec(root=root), root)
    ok = index[index["status"] == "ok"]
    assert len(ok) >= 3
    return {"index": index, "series": {r.patient_id: list(r.files) for r in ok.itertuples()}}


@pytest.fixture(scope="module")
def written(demo: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One SR for the first patient with images, written with a seed, plus the facts to check it against."""
    pid, files = next(iter(demo["series"].items()))
    out = tmp_path_factory.mktemp("sr")
    path = write_prediction_sr(files, "LUAD", PROBS, out, "clinicmm-demo", "3", seed_uid="1.2.3.4", **RESULT)
    source = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    return {"path": path, "files": files, "pid": pid, "source": source}


def _walk(items) -> list:
    """Every content item of a highdicom content tree, depth first."""
    found = []
    for item in items:
        found.append(item)
        found.extend(_walk(item.get("ContentSequence", [])))
    return found


def _classes(sr) -> dict[str, tuple[str, str, float]]:
    """OncoTree code -> (concept name code, code meaning, probability) of every class CODE item."""
    found = {}
    for item in _walk(sr.ContentSequence):
        if item.ValueType == "CODE" and item.name.value in (IMPRESSION, DIFFERENTIAL):
            nums = [c for c in item.ContentSequence if c.ValueType == "NUM"]
            assert len(nums) == 1 and nums[0].name.value == PROBABILITY and nums[0].unit.value == "1"
            found[item.value.value] = (item.name.value, item.value.meaning, nums[0].value)
    return found


# ------------------------------------------------------------------------------------------------ one SR


def test_sr_is_filed_into_the_source_study(written: dict) -> None:
    ds = pydicom.dcmread(written["path"])
    src = written["source"][0]
    assert ds.SOPClassUID == ComprehensiveSRStorage and ds.Modality == "SR"
    assert written["path"].name == f"{ds.SOPInstanceUID}.dcm"
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    patient = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
    assert [str(ds[k].value) for k in patient] == [str(src[k].value) for k in patient]
    assert ds.PatientID == written["pid"] and ds.AccessionNumber == src.AccessionNumber
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID  # a new series in the same study
    assert (ds.VerificationFlag, ds.CompletionFlag) == ("UNVERIFIED", "COMPLETE")
    assert ds.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report (CID 7021)
    assert [s.CodingSchemeDesignator for s in ds.CodingSchemeIdentificationSequence] == ["OncoTree", "99CLINICMM"]


def test_evidence_lists_exactly_the_source_instances(written: dict) -> None:
    ds = pydicom.dcmread(written["path"])
    (study,) = ds.CurrentRequestedProcedureEvidenceSequence
    (series,) = study.ReferencedSeriesSequence
    src = written["source"]
    assert study.StudyInstanceUID == src[0].StudyInstanceUID and series.SeriesInstanceUID == src[0].SeriesInstanceUID
    refs = sorted(r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence)
    assert refs == sorted(s.SOPInstanceUID for s in src) and len(refs) == len(written["files"])
    assert "PertinentOtherEvidenceSequence" not in ds


def test_content_holds_the_prediction_and_every_probability(written: dict) -> None:
    sr = hd.sr.srread(written["path"])
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    classes = _classes(sr)
    assert classes["LUAD"] == (IMPRESSION, "Lung Adenocarcinoma", 0.625)
    assert {code: c[2] for code, c in classes.items()} == PROBS
    assert [code for code, c in classes.items() if c[0] == IMPRESSION] == ["LUAD"]
    assert all(c[0] == DIFFERENTIAL for code, c in classes.items() if code != "LUAD")
    texts = {i.name.meaning: i.value for i in _walk(sr.ContentSequence) if i.ValueType == "TEXT"}
    assert texts["Algorithm Name"] == "clinicmm-demo" and texts["Algorithm Version"] == "3"
    assert texts["Device Observer Name"] == "clinicmm-demo"


def _group(path: Path):
    """The TID 1500 report read back with highdicom, and its one measurement group (TID 1501)."""
    sr = hd.sr.srread(path)
    report = hd.sr.MeasurementReport.from_sequence([sr])
    (group,) = report.get_image_measurement_groups()
    return sr, report, group


def _named(items, scheme: str, code: str) -> list:
    return [i for i in items if i.name.scheme_designator == scheme and i.name.value == code]


def test_root_is_a_tid_1500_measurement_report(written: dict) -> None:
    ds = pydicom.dcmread(written["path"])
    (template,) = ds.ContentTemplateSequence
    assert (template.MappingResource, template.TemplateIdentifier) == ("DCMR", "1500")
    sr, report, group = _group(written["path"])
    assert isinstance(group, hd.sr.MeasurementsAndQualitativeEvaluations)
    assert group[0].ContentTemplateSequence[0].TemplateIdentifier == "1501"
    procedure = _named(sr.ContentSequence, "DCM", "121058")  # Procedure reported: from the source modality (CT)
    assert [p.value.value for p in procedure] == ["25045-6"]
    assert group.finding_type.value == "LUAD" and group.finding_type.scheme_designator == "OncoTree"
    assert group.tracking_identifier == "clinicmm cancer type prediction" and group.tracking_uid


def test_image_library_references_every_source_slice(written: dict) -> None:
    sr, _, _ = _group(written["path"])
    (library,) = _named(sr.ContentSequence, "DCM", "111028")  # Image Library (TID 1600)
    images = [i for i in _walk(library.ContentSequence) if i.ValueType == "IMAGE"]
    refs = sorted((i.referenced_sop_class_uid, i.referenced_sop_instance_uid) for i in images)
    assert refs == sorted((str(s.SOPClassUID), str(s.SOPInstanceUID)) for s in written["source"])
    assert len(refs) == len(written["files"])


def test_group_holds_the_set_the_decision_and_the_shares(written: dict) -> None:
    _, _, group = _group(written["path"])
    items = list(group[0].ContentSequence)
    members = _named(items, "99CLINICMM", "SETMEMBER")
    assert [(m.value.value, m.value.scheme_designator) for m in members] == [("LUAD", "OncoTree"), ("LUSC", "OncoTree")]
    (size,) = _named(items, "99CLINICMM", "SETSIZE")
    assert size.value == 2 and size.unit.value == "{count}"
    (decision,) = _named(items, "99CLINICMM", "DECISION")
    assert (decision.value.value, decision.value.meaning) == ("ABSTAIN", "abstain: refer for review")
    shares = {m.name.value: (m.value, m.unit.value) for m in group.get_measurements()}
    assert shares == {
        "SHARE-IMAGE": (0.25, "1"),
        "SHARE-NOTE": (0.5, "1"),
        "SHARE-OMICS": (0.25, "1"),
        "SETSIZE": (2, "{count}"),
    }
    algorithm = {i.name.meaning: i.value for i in items if i.ValueType == "TEXT"}
    assert algorithm["Algorithm Name"] == "clinicmm-demo" and "Not verified by a physician" in algorithm["Comment"]


def test_predict_decision_and_an_empty_set(written: dict, tmp_path: Path) -> None:
    path = write_prediction_sr(
        written["files"], "LUAD", PROBS, tmp_path, "m", "1", prediction_set=[], decision="predict", shares={"note": 1.0}
    )
    items = list(_group(path)[2][0].ContentSequence)
    assert _named(items, "99CLINICMM", "SETMEMBER") == [] and _named(items, "99CLINICMM", "SETSIZE")[0].value == 0
    assert _named(items, "99CLINICMM", "DECISION")[0].value.value == "PREDICT"
    assert [i.name.value for i in items if i.ValueType == "NUM"] == ["SHARE-NOTE", "SETSIZE"]


def test_without_set_decision_or_shares_those_items_are_left_out(written: dict, tmp_path: Path) -> None:
    path = write_prediction_sr(written["files"], "LUAD", PROBS, tmp_path, "m", "1")
    items = list(_group(path)[2][0].ContentSequence)
    assert not [i for i in items if i.name.scheme_designator == "99CLINICMM"]
    assert _classes(hd.sr.srread(path))["LUAD"][2] == 0.625


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"prediction_set": ["LUAD", "XXXX"]}, "XXXX"),
        ({"decision": "maybe"}, "decision 'maybe'"),
        ({"shares": {"image": 1.5}}, "share_image"),
        ({"shares": {"audio": 0.5}}, "audio"),
    ],
)
def test_bad_set_decision_or_share_is_refused(written: dict, tmp_path: Path, bad: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        write_prediction_sr(written["files"], "LUAD", PROBS, tmp_path, "m", "1", **bad)
    assert not list(tmp_path.iterdir())


def test_seed_makes_uids_reproducible(written: dict, tmp_path: Path) -> None:
    files = written["files"]
    again = write_prediction_sr(files, "LUAD", PROBS, tmp_path / "a", "clinicmm-demo", "3", seed_uid="1.2.3.4")
    other = write_prediction_sr(files, "LUAD", PROBS, tmp_path / "b", "clinicmm-demo", "3", seed_uid="9.9")
    fresh = [write_prediction_sr(files, "LUAD", PROBS, tmp_path / "c", "m", "1") for _ in range(2)]
    assert again.name == written["path"].name and other.name != again.name
    assert fresh[0].name != fresh[1].name
    same = [pydicom.dcmread(p).SeriesInstanceUID for p in (written["path"], again, other)]
    assert same[0] == same[1] != same[2]


def test_unknown_code_keeps_the_code_as_meaning(written: dict, tmp_path: Path) -> None:
    path = write_prediction_sr(written["files"], "ZZZ", {"ZZZ": 0.9, "LUAD": 0.1}, tmp_path, "m", "1")
    classes = _classes(hd.sr.srread(path))
    assert classes == {"ZZZ": (IMPRESSION, "ZZZ", 0.9), "LUAD": (DIFFERENTIAL, "Lung Adenocarcinoma", 0.1)}


@pytest.mark.parametrize("probs", [{"LUSC": 1.0}, {"LUAD": 1.5}, {"LUAD": float("nan")}, {"LUAD": "x"}])
def test_bad_probabilities_are_refused(written: dict, tmp_path: Path, probs: dict) -> None:
    with pytest.raises(InputError, match="LUAD"):
        write_prediction_sr(written["files"], "LUAD", probs, tmp_path, "m", "1")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ bad headers


def _copy_series(files: list[str], dest: Path) -> list[str]:
    dest.mkdir(parents=True)
    return [str(shutil.copy(f, dest / Path(f).name)) for f in files]


@pytest.mark.parametrize("keyword", ["PatientBirthDate", "AccessionNumber", "StudyID"])
def test_missing_attribute_names_file_and_tag(written: dict, tmp_path: Path, keyword: str) -> None:
    files = _copy_series(written["files"], tmp_path / "src")
    ds = pydicom.dcmread(files[1])
    del ds[keyword]
    ds.save_as(files[1])
    with pytest.raises(InputError, match=keyword) as err:
        write_prediction_sr(files, "LUAD", PROBS, tmp_path / "out", "m", "1")
    assert files[1] in str(err.value) and "export" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_empty_study_uid_is_refused(written: dict, tmp_path: Path) -> None:
    files = _copy_series(written["files"], tmp_path / "src")
    ds = pydicom.dcmread(files[0])
    ds.StudyInstanceUID = ""
    ds.save_as(files[0])
    with pytest.raises(InputError, match=r"StudyInstanceUID \(0020,000D\)"):
        write_prediction_sr(files, "LUAD", PROBS, tmp_path / "out", "m", "1")


def test_minimal_ct_headers_list_every_missing_attribute(tmp_path: Path) -> None:
    files = [str(p) for p in write_series(tmp_path / "ct", uniform(0.0, (3, 4, 4)), patient="P1")]
    with pytest.raises(InputError) as err:
        write_prediction_sr(files, "LUAD", PROBS, tmp_path / "out", "m", "1")
    message = str(err.value)
    lacking = ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID")
    for keyword in lacking:
        assert keyword in message
    assert "PatientID" not in message and Path(files[0]).name in message


def test_series_from_two_studies_is_refused(demo: dict, tmp_path: Path) -> None:
    a, b = list(demo["series"].values())[:2]
    with pytest.raises(InputError, match="2 studies"):
        write_prediction_sr([*a, *b], "LUAD", PROBS, tmp_path, "m", "1")


def test_unreadable_source_names_the_file(written: dict, tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_text("not DICOM")
    with pytest.raises(InputError, match="bad.dcm"):
        write_prediction_sr([*written["files"], str(bad)], "LUAD", PROBS, tmp_path / "out", "m", "1")


# ------------------------------------------------------------------------------------------------ batch


def _prediction(pid: str, predicted: str = "LUAD", status: str = "scored", reason: str = "") -> dict:
    scored = status == "scored"
    probs = {f"prob_{c}": (p if scored else np.nan) for c, p in PROBS.items()}
    result = {"prediction_set": "LUAD+LUSC" if scored else "", "set_size": 2 if scored else None,
              "decision": "predict" if scored else ""}  # fmt: skip
    shares = {"share_image": 0.5 if scored else None, "share_note": 0.5 if scored else None, "share_omics": np.nan}
    return {"patient_id": pid, "predicted": predicted if scored else ""} | probs | result | {
        "modalities": "image", "status": status, "reason": reason} | shares  # fmt: skip


def test_batch_writes_ok_patients_and_lists_the_rest(demo: dict, tmp_path: Path) -> None:
    first, second, broken = list(demo["series"])[:3]
    files = _copy_series(demo["series"][broken], tmp_path / "broken")
    ds = pydicom.dcmread(files[0])
    del ds.PatientSex
    ds.save_as(files[0])
    index = demo["index"].copy()
    index["files"] = [files if p == broken else f for p, f in zip(index["patient_id"], index["files"])]
    preds = pd.DataFrame([
        _prediction(first), _prediction("NO-IMAGES"), _prediction(second, status="not scored", reason="bad note"),
        _prediction(broken), _prediction(list(demo["series"])[3] if len(demo["series"]) > 3 else first, "STAD"),
    ])  # fmt: skip
    result = write_sr_for_predictions(preds, index, tmp_path / "sr", "clinicmm-demo", "3")
    assert list(result.columns) == ["patient_id", "sr_path", "status", "reason"]
    assert list(result["patient_id"]) == list(preds["patient_id"])
    assert list(result["status"]) == ["ok", "skipped", "skipped", "skipped", "ok"]
    by = result.set_index("patient_id")
    assert "no usable image series" in by.loc["NO-IMAGES", "reason"]
    assert "not scored" in by.loc[second, "reason"] and "bad note" in by.loc[second, "reason"]
    assert "PatientSex" in by.loc[broken, "reason"] and files[0] in by.loc[broken, "reason"]
    assert (result.loc[result["status"] == "skipped", "sr_path"] == "").all()
    written = [Path(p) for p in result.loc[result["status"] == "ok", "sr_path"]]
    assert sorted(p.name for p in (tmp_path / "sr").iterdir()) == sorted({p.name for p in written})
    ds = pydicom.dcmread(written[0])
    assert ds.PatientID == first
    assert ds.StudyInstanceUID == pydicom.dcmread(demo["series"][first][0], stop_before_pixels=True).StudyInstanceUID
    assert _classes(hd.sr.srread(written[-1]))["STAD"][0] == IMPRESSION
    items = list(_group(written[0])[2][0].ContentSequence)  # the row's set, decision and known shares
    assert [m.value.value for m in _named(items, "99CLINICMM", "SETMEMBER")] == ["LUAD", "LUSC"]
    assert _named(items, "99CLINICMM", "DECISION")[0].value.value == "PREDICT"
    assert [i.name.value for i in items if i.ValueType == "NUM"] == ["SHARE-IMAGE", "SHARE-NOTE", "SETSIZE"]


def test_batch_references_every_ok_series_of_a_patient(demo: dict, tmp_path: Path) -> None:
    pid = next(iter(demo["series"]))
    files = demo["series"][pid]
    index = demo["index"].copy()
    second = index[index["patient_id"] == pid].iloc[[0]].assign(files=[files[:2]])  # a second ok row, same study
    index = pd.concat([index.assign(files=[f[2:] if p == pid else f for p, f in zip(index.patient_id, index.files)]),
                       second], ignore_index=True)  # fmt: skip
    result = write_sr_for_predictions(pd.DataFrame([_prediction(pid)]), index, tmp_path, "m", "1")
    sr = hd.sr.srread(result["sr_path"][0])
    images = [i for i in _walk(sr.ContentSequence) if i.ValueType == "IMAGE"]
    source = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert {i.referenced_sop_instance_uid for i in images} == source


def test_batch_accepts_files_as_json_text(demo: dict, tmp_path: Path) -> None:
    index = demo["index"].copy()
    index["files"] = [json.dumps(list(f)) for f in index["files"]]
    pid = next(iter(demo["series"]))
    result = write_sr_for_predictions(pd.DataFrame([_prediction(pid)]), index, tmp_path, "m", "1")
    assert list(result["status"]) == ["ok"] and Path(result["sr_path"][0]).is_file()


def test_batch_names_a_missing_column(demo: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'predicted'"):
        write_sr_for_predictions(pd.DataFrame({"patient_id": ["x"]}), demo["index"], tmp_path, "m", "1")
