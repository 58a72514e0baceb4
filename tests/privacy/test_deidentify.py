"""``clinicmm deidentify``: the PS3.15 Basic Profile on real DICOM, consistent UIDs, burned-in refusal, notes."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from deid_checks import deidentify_and_compare

from clinicmm.errors import ConfigError, InputError
from clinicmm.privacy.deid_dicom import deidentify_file
from clinicmm.privacy.deid_notes import scrub
from clinicmm.privacy.pseudonym import day_shift, load_key, pseudonym, remap_uid

KEY, OTHER = b"k" * 32, b"o" * 32
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_the_basic_profile_on_a_vendor_file_with_private_tags():
    src = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    assert any(e.tag.is_private for e in src.iterall()) and src.get("InstitutionName")
    ds, row = deidentify_file(TEST_FILES / "CT_small.dcm", KEY)
    assert row["status"] == "written" and row["private_removed"] > 0
    assert not any(e.tag.is_private for e in ds.iterall())
    assert ds.PatientID == ds.PatientName == pseudonym(src.PatientID, KEY)
    assert "InstitutionName" not in ds and "OperatorsName" not in ds and ds.get("PatientBirthDate") in ("", None)
    assert ds.StudyInstanceUID == remap_uid(src.StudyInstanceUID, KEY) != src.StudyInstanceUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == remap_uid(src.SOPInstanceUID, KEY)
    assert ds.SOPClassUID == src.SOPClassUID  # not an identifier: kept
    shifted = pd.Timestamp(src.StudyDate) + pd.Timedelta(days=day_shift(src.PatientID, KEY))
    assert ds.StudyDate == shifted.strftime("%Y%m%d")
    assert ds.PatientIdentityRemoved == "YES"
    assert {i.CodeValue for i in ds.DeidentificationMethodCodeSequence} == {"113100", "113107"}
    assert (ds.pixel_array == src.pixel_array).all()


def test_uids_map_consistently_across_files_and_runs_and_depend_on_the_key(small_demo, tmp_path):
    from clinicmm.privacy.deidentify import deidentify_dicom

    root = small_demo[0].parent / "dicom"
    series = next(p for p in root.rglob("*") if p.is_dir() and len(list(p.glob("*.dcm"))) >= 3)
    rows, _ = deidentify_dicom(series, tmp_path / "a", KEY, progress=False)
    again, _ = deidentify_dicom(series, tmp_path / "b", KEY, progress=False)
    other, _ = deidentify_dicom(series, tmp_path / "c", OTHER, progress=False)
    out = [pydicom.dcmread(tmp_path / "a" / r["output"]) for r in rows if r["status"] == "written"]
    assert len({d.SeriesInstanceUID for d in out}) == 1 and len({d.StudyInstanceUID for d in out}) == 1
    assert len({d.SOPInstanceUID for d in out}) == len(out) >= 3
    assert [r["output"] for r in rows] == [r["output"] for r in again]  # same key: same files
    assert {r["pseudonym"] for r in other}.isdisjoint({r["pseudonym"] for r in rows})


def test_burned_in_annotation_is_refused_and_reported_and_the_input_is_never_written(small_demo, tmp_path):
    from clinicmm.privacy.deidentify import deidentify

    src = tmp_path / "in"
    series = next(
        p for p in (small_demo[0].parent / "dicom").rglob("*") if p.is_dir() and len(list(p.glob("*.dcm"))) >= 3
    )
    shutil.copytree(series, src)
    burned = sorted(src.glob("*.dcm"))[0]
    ds = pydicom.dcmread(burned)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(burned)
    before = _tree_digest(src)
    result = deidentify(src, tmp_path / "out", KEY, progress=False)
    report = pd.read_csv(result["report"])
    assert result["dicom"]["refused"] == 1 and result["dicom"]["written"] == len(report) - 1
    assert report.loc[report["source"] == burned.name, "reason"].str.contains("BurnedInAnnotation").all()
    assert _tree_digest(src) == before and not Path(result["report"]).resolve().is_relative_to(
        (tmp_path / "out").resolve()
    )
    with pytest.raises(InputError, match="overlaps"):
        deidentify(src, src / "deid", KEY, progress=False)
    with pytest.raises(InputError, match="not an empty folder"):
        deidentify(src, tmp_path / "out", KEY, progress=False)


def test_a_deidentified_dataset_keeps_no_id_or_name_and_links_the_same_modalities(small_demo, tmp_path):
    from clinicmm.config import load_dataset
    from clinicmm.ingest.cohort import build_cohort
    from clinicmm.privacy.deidentify import deidentify
    from clinicmm.privacy.scan import scan_tree

    dataset, truth = small_demo
    result = deidentify(dataset, tmp_path / "deid", KEY, progress=False)
    names = {
        str(pydicom.dcmread(p, stop_before_pixels=True).PatientName)
        for p in (dataset.parent / "dicom").rglob("*.dcm")
        if p.stat().st_size > 1000 and p.name != "export_log.dcm"
    }
    assert scan_tree([tmp_path / "deid"], list(truth["patients"]))["hits"] == []  # no id in any byte
    notes = (tmp_path / "deid" / "notes.csv").read_text()
    parts = {n for name in names for n in name.split("^") if len(n) > 3}
    assert parts and not [n for n in parts if re.search(rf"\b{re.escape(n)}\b", notes, re.I)]
    assert {
        str(pydicom.dcmread(p, stop_before_pixels=True).PatientName)[:2]
        for p in (tmp_path / "deid" / "dicom").rglob("*.dcm")
    } == {"P-"}
    before = build_cohort(load_dataset(dataset), split=False).manifest
    after = build_cohort(load_dataset(tmp_path / "deid" / "dataset.yaml"), split=False).manifest
    cols = ["status", "has_image", "has_note", "has_omics"]
    assert before[cols].value_counts().to_dict() == after[cols].value_counts().to_dict()
    mapped = dict(zip([pseudonym(p, KEY) for p in before["patient_id"]], before["label"]))
    assert dict(zip(after["patient_id"], after["label"])) == mapped
    assert result["dicom"]["skipped"] >= 2  # the demo's README and the text file named .dcm, reported


def test_notes_lose_names_mrns_and_contacts_and_dates_move_by_the_patient_shift():
    days = day_shift("MRN-1", KEY)
    text = (
        "Seen by Dr. Alan Smith for Zebulon Quixote-Hargreaves (MRN: 80417733) on 2021-06-05 and 5 March 2021; "
        "phone (555) 123-4567, z.q@example.org. Tumour 3.2 cm, Ki-67 40%, BRCA1 mutated, pT2N0. Ref MRN-1. "
        "Labeled with the medical record number."
    )
    out = scrub(text, days, names={"Zebulon", "Quixote-Hargreaves"}, replace={"MRN-1": pseudonym("MRN-1", KEY)})
    for gone in ("Alan Smith", "Zebulon", "Quixote", "80417733", "555", "example.org", "2021-06-05", "MRN-1"):
        assert gone not in out
    moved = (pd.Timestamp("2021-06-05") + pd.Timedelta(days=days)).strftime("%Y-%m-%d")
    assert moved in out and pseudonym("MRN-1", KEY) in out
    for kept in ("3.2 cm", "Ki-67 40%", "BRCA1 mutated", "pT2N0", "medical record number."):
        assert kept in out


def test_keys_are_checked_and_never_live_in_the_mlflow_store(tmp_path, monkeypatch):
    monkeypatch.delenv("CLINICMM_PHI_KEY", raising=False)
    store = tmp_path / "mlruns"
    store.mkdir()
    with pytest.raises(ConfigError, match="inside the MLflow store"):
        load_key(None, store / "privacy.key", forbidden=store)
    (tmp_path / "short.key").write_text("abc")
    with pytest.raises(ConfigError, match="at least 16"):
        load_key(tmp_path / "short.key")
    made = load_key(None, tmp_path / "work" / "privacy.key", forbidden=store)
    assert load_key(None, tmp_path / "work" / "privacy.key") == made and len(made) >= 32
    monkeypatch.setenv("CLINICMM_PHI_KEY", "e" * 20)
    assert load_key(None, tmp_path / "other.key") == b"e" * 20 and not (tmp_path / "other.key").exists()
    assert pseudonym("A", made) == pseudonym("A", made) != pseudonym("A", b"e" * 20)


def test_the_cli_prints_the_counts_and_writes_the_key_beside_out(small_demo, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from clinicmm.cli import app

    monkeypatch.delenv("CLINICMM_PHI_KEY", raising=False)
    series = next(
        p for p in (small_demo[0].parent / "dicom").rglob("*") if p.is_dir() and len(list(p.glob("*.dcm"))) >= 3
    )
    result = CliRunner().invoke(app, ["deidentify", str(series), str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "files written for 1 patients" in result.output and (tmp_path / "out-privacy.key").is_file()
    assert (tmp_path / "out-deid-report.csv").is_file()


def test_references_inside_sequences_follow_the_remapped_uids_and_names_inside_them_go(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, "1.2.3.4.5"
    ref.add_new(0x00091001, "LO", "vendor secret")  # private, inside a sequence
    ds.ReferencedImageSequence = Sequence([ref])
    content = Dataset()
    content.TextValue, content.PersonName = "Seen by Zebulon", "Hargreaves^Zebulon"
    ds.ContentSequence = Sequence([content])
    ds.save_as(tmp_path / "in.dcm")
    out, _ = deidentify_file(tmp_path / "in.dcm", KEY)
    item = out.ReferencedImageSequence[0]
    assert item.ReferencedSOPInstanceUID == remap_uid("1.2.3.4.5", KEY) and item.ReferencedSOPClassUID == ds.SOPClassUID
    assert 0x00091001 not in item
    assert "Zebulon" not in str(out.ContentSequence[0].TextValue) + str(out.ContentSequence[0].PersonName)


def test_notes_in_patient_folders_and_a_names_table_are_deidentified_too(tmp_path):
    from clinicmm.privacy.deidentify import deidentify

    data = tmp_path / "data"
    (data / "notes" / "MRN-7").mkdir(parents=True)
    (data / "notes" / "MRN-7" / "path_2021-03-04.txt").write_bytes(
        "Ms Agnès Dupont, MR# 5512-77: adenocarcinoma.".encode("latin-1")
    )
    (data / "labels.csv").write_text("patient_id,cancer_type\nMRN-7,LUAD\n")
    (data / "names.csv").write_text("patient_id,name\nMRN-7,Agnès Dupont\n")
    (data / "dataset.yaml").write_text("name: t\nlabels: {path: labels.csv}\nnotes: {path: notes, encoding: latin-1}\n")
    deidentify(data / "dataset.yaml", tmp_path / "out", KEY, progress=False, names=data / "names.csv")
    moved = (pd.Timestamp("2021-03-04") + pd.Timedelta(days=day_shift("MRN-7", KEY))).strftime("%Y-%m-%d")
    note = tmp_path / "out" / "notes" / pseudonym("MRN-7", KEY) / f"path_{moved}.txt"
    text = note.read_text(encoding="utf-8")
    assert "adenocarcinoma" in text and not re.search(r"Agn|Dupont|5512", text), text
    assert (tmp_path / "out" / "labels.csv").read_text().splitlines()[1] == f"{pseudonym('MRN-7', KEY)},LUAD"


def test_omics_layers_and_tcga_barcodes_cut_by_length_link_to_the_same_patients_after(tmp_path):
    """Every omics layer is pseudonymised (before, layers were left out and the copy named files it lacked), and
    ``patient_id_length: 12`` becomes the pseudonym pattern (before, the first 12 characters of a pseudonym of the
    whole barcode were read as the patient, so no patient kept their omics)."""
    from clinicmm.privacy.deidentify import deidentify

    data = tmp_path / "data"
    data.mkdir()
    patients = ["TCGA-A3-3306", "TCGA-A3-3307", "TCGA-A3-3308"]
    (data / "labels.csv").write_text("patient_id,cancer_type\n" + "".join(f"{p},KIRC\n" for p in patients))
    (data / "expr.tsv").write_text(
        "gene\t" + "\t".join(f"{p}-01A" for p in patients) + "\nP53\t1\t2\t3\nEGFR\t4\t5\t6\n"
    )
    (data / "meth.tsv").write_text(
        "sample_id\tcg01\tcg02\n" + "".join(f"{p}-01A\t0.{i}\t0.5\n" for i, p in enumerate(patients))
    )
    (data / "manifest.csv").write_text("IlmnID,UCSC_RefGene_Name\ncg01,TP53\n")
    (data / "hgnc.tsv").write_text(
        "hgnc_id\tsymbol\tstatus\talias_symbol\tprev_symbol\tensembl_gene_id\tentrez_id\n"
        "HGNC:1\tTP53\tApproved\tP53\t\t\t7157\nHGNC:2\tEGFR\tApproved\tERBB1\t\t\t1956\n"
    )
    (data / "dataset.yaml").write_text(
        "name: t\nlabels: {path: labels.csv}\ngenomics:\n  patient_id_length: 12\n  genes: {hgnc_table: hgnc.tsv}\n"
        "  expression: {path: expr.tsv, orientation: genes_x_samples, unit: log}\n"
        "  layers:\n    - {name: meth, kind: methylation, path: meth.tsv, features: probe, feature_map: manifest.csv}\n"
    )
    after = deidentify_and_compare(data, tmp_path / "out", KEY, patients)
    assert after.manifest["has_omics"].all() and len(after.manifest) == 3
    assert {"meth:TP53", "TP53"} <= set(after.expression.columns)  # the feature map and the gene table came along
    (data / "dataset.yaml").write_text(
        "name: t\nlabels: {path: labels.csv}\ngenomics:\n  expression: {path: dl, sample_sheet: labels.csv}\n"
    )
    (data / "dl").mkdir()
    with pytest.raises(InputError, match="sample_sheet: a folder of one file per sample"):
        deidentify(data / "dataset.yaml", tmp_path / "out2", KEY, progress=False)
    (data / "other").mkdir()  # two layers' maps of one name from two folders: one would overwrite the other in OUT
    (data / "other" / "manifest.csv").write_text("IlmnID,UCSC_RefGene_Name\ncg02,EGFR\n")
    (data / "meth2.tsv").write_text((data / "meth.tsv").read_text())
    (data / "dataset.yaml").write_text(
        "name: t\nlabels: {path: labels.csv}\ngenomics:\n  patient_id_length: 12\n  layers:\n"
        "    - {name: meth, kind: methylation, path: meth.tsv, features: probe, feature_map: manifest.csv}\n"
        "    - {name: meth2, kind: methylation, path: meth2.tsv, features: probe, feature_map: other/manifest.csv}\n"
    )
    with pytest.raises(InputError, match=r"share one \(manifest.csv\)"):
        deidentify(data / "dataset.yaml", tmp_path / "out3", KEY, progress=False)
    assert not (tmp_path / "out3" / "feature_maps").exists()
