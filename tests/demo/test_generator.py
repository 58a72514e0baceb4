"""Tests of the demo cohort generator: layout, determinism, DICOM validity, missing data, bad inputs, the
generative story (a rare type, patient-specific genes of a shared pathway, no label-revealing header), and the
property the demo exists for: each modality alone separates (noisily) only pairs of cancer types."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clinicmm.config import load_dataset
from clinicmm.demo.design import (
    CANCER_TYPES,
    HISTOLOGIES,
    PROGRAMMES,
    RARE_TYPE,
    SITES,
    TYPE_BY_CODE,
    demo_edges_rows,
    programme_genes,
    programme_pool,
)
from clinicmm.demo.generator import EDGES, MARKER, demo_edges, generate_demo, type_counts
from clinicmm.demo.notes_writer import NEGATED
from clinicmm.errors import InputError
from clinicmm.knowledge.graph import KnowledgeGraph

SMALL = dict(patients=20, seed=0, missing_rate=0.15, inject_bad=True, slices=5, size=32)
NOTE_K = 200  # TF-IDF terms kept: enough for every histology cue, few enough that a leak would stand out
REQUIRED_TAGS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "SeriesNumber",
    "InstanceNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo") / "cohort", **SMALL).parent


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """72 complete patients (12 per type), small volumes: enough for cross-validated separability checks."""
    return generate_demo(
        tmp_path_factory.mktemp("clean") / "cohort", patients=72, seed=3, missing_rate=0.0, slices=4, size=32
    ).parent


def _truth(folder: Path) -> dict:
    return json.loads((folder / "demo_truth.json").read_text())


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "dicom").rglob("*") if p.is_file())


def _bad(folder: Path) -> dict[str, dict]:
    return {b["kind"]: b for b in _truth(folder)["bad_inputs"]}


# ------------------------------------------------------------------------------------- layout, determinism


def test_same_seed_gives_identical_files_and_another_seed_differs(demo: Path, tmp_path: Path) -> None:
    again = generate_demo(tmp_path / "again", **SMALL).parent
    assert _hashes(again) == _hashes(demo)
    other = _hashes(generate_demo(tmp_path / "other", **{**SMALL, "seed": 1}).parent)
    assert other["expression.tsv"] != _hashes(demo)["expression.tsv"]
    assert other["labels.csv"] != _hashes(demo)["labels.csv"]


def test_dataset_yaml_loads_and_names_the_written_files(demo: Path) -> None:
    spec = load_dataset(demo / "dataset.yaml")
    assert spec.name == "demo"
    assert spec.imaging.modalities == ["CT"] and spec.imaging.patient_tag == "PatientID"
    assert spec.notes.note_id_column == "note_id" and spec.notes.note_type_column == "note_type"
    assert spec.genomics.expression.orientation == "samples_x_genes" and spec.genomics.expression.unit == "tpm"
    assert re.match(spec.genomics.patient_id_pattern, "DEMO-0007-01A").group(1) == "DEMO-0007"
    assert spec.resolve(spec.labels.path) == (demo / "labels.csv").resolve()


def test_labels_follow_the_type_shares_and_match_the_truth(clean: Path) -> None:
    labels = pd.read_csv(clean / "labels.csv", dtype=str)
    assert list(labels.columns) == ["patient_id", "cancer_type"]
    expected = dict(zip(TYPE_BY_CODE, type_counts(72)))
    assert labels["cancer_type"].value_counts().to_dict() == expected
    truth = _truth(clean)["patients"]
    assert all(truth[p]["cancer_type"] == c for p, c in zip(labels["patient_id"], labels["cancer_type"]))


# ------------------------------------------------------------------------------------------------ DICOM


@pytest.mark.parametrize("patients", [120, 200, 1000])
def test_the_rare_type_is_about_six_percent_of_the_cohort(patients: int) -> None:
    counts = dict(zip((t.code for t in CANCER_TYPES), type_counts(patients)))
    assert sum(counts.values()) == patients
    assert 0.05 <= counts[RARE_TYPE] / patients <= 0.08
    assert counts[RARE_TYPE] < 0.5 * min(n for c, n in counts.items() if c != RARE_TYPE)


def test_every_good_dicom_file_has_the_tags_and_no_header_naming_the_site(demo: Path) -> None:
    truth = _truth(demo)["patients"]
    bad_files = {demo / b["file"] for b in _truth(demo)["bad_inputs"]}
    good = [p for p in _files(demo) if p not in bad_files]
    assert good and any(p.suffix == "" for p in good) and any(p.suffix == ".dcm" for p in good)
    for path in good:
        ds = pydicom.dcmread(path)
        missing = [t for t in REQUIRED_TAGS if t not in ds]
        assert not missing, f"{path.name}: missing {missing}"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == pydicom.uid.CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.PatientID == path.relative_to(demo / "dicom").parts[0]
        assert truth[ds.PatientID]["cancer_type"]  # a labelled (or the unlabelled) demo patient
        assert "BodyPartExamined" not in ds  # the site is in the pixels only
        for value in (ds.SeriesDescription, ds.StudyDescription, ds.ImageType):
            assert not any(w in str(value).upper() for w in ("CHEST", "ABDOMEN", "NECK", "THORAX"))
        pixels = ds.pixel_array
        assert pixels.shape == (SMALL["size"], SMALL["size"]) and pixels.dtype == np.uint16 and pixels.max() <= 4095


def test_series_slices_are_numbered_and_advance_by_the_slice_thickness(demo: Path) -> None:
    bad_files = {demo / b["file"] for b in _truth(demo)["bad_inputs"]}
    series: dict[str, list] = {}
    for path in _files(demo):
        if path not in bad_files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    truncated_patient = _bad(demo)["truncated_dicom"]["patient_id"]
    for uid, slices in series.items():
        slices.sort(key=lambda d: int(d.InstanceNumber))
        expected = SMALL["slices"] - (slices[0].PatientID == truncated_patient)
        assert len(slices) == expected
        z = np.array([float(d.ImagePositionPatient[2]) for d in slices])
        gaps = np.diff(z)
        assert np.allclose(gaps[gaps < 1.5 * float(slices[0].SliceThickness)], float(slices[0].SliceThickness))
        assert len({d.SOPInstanceUID for d in slices}) == len(slices)
        assert len({d.StudyInstanceUID for d in slices}) == 1


def test_lesion_and_anatomy_follow_the_site(clean: Path) -> None:
    """Chest volumes hold lung-dark voxels; abdomen and neck volumes barely any."""
    truth = _truth(clean)["patients"]
    dark: dict[str, list[float]] = {s: [] for s in SITES}
    for pid in list(truth)[:24]:
        hu = np.stack([pydicom.dcmread(f).pixel_array.astype(float) - 1024 for f in _files(clean) if pid in f.parts])
        dark[truth[pid]["site"]].append(float(((hu > -850) & (hu < -550)).mean()))
    assert min(dark["chest"]) > 0.1
    assert max(dark["abdomen"] + dark["neck"]) < 0.02


# -------------------------------------------------------------------------------------- missing data


def test_missing_share_and_each_missing_modality_is_really_absent(demo: Path) -> None:
    truth = _truth(demo)["patients"]
    lacking = {p: set(t["missing"].split("+")) for p, t in truth.items() if t["missing"]}
    one = [p for p, m in lacking.items() if len(m) == 1]
    single = [p for p, m in lacking.items() if len(m) == 2]  # one modality only
    assert len(one) == round(SMALL["missing_rate"] * SMALL["patients"])
    assert len(single) == round(SMALL["missing_rate"] * SMALL["patients"])  # single_rate defaults to missing_rate
    assert {truth[p]["modalities"][0] for p in single} == {"image", "note", "omics"}
    imaged = {p.relative_to(demo / "dicom").parts[0] for p in _files(demo) if p.parent != demo / "dicom"}
    noted = set(pd.read_csv(demo / "notes.csv", dtype=str)["patient_id"])
    expressed = {s[:9] for s in pd.read_csv(demo / "expression.tsv", sep="\t", dtype=str)["sample_id"]}
    mutated = {s[:9] for s in pd.read_csv(demo / "mutations.maf", sep="\t", dtype=str)["Tumor_Sample_Barcode"]}
    for pid in truth:
        gone = lacking.get(pid, set())
        assert set(truth[pid]["modalities"]) == {"image", "note", "omics"} - gone
        assert (pid in imaged) == ("image" not in gone)
        assert (pid in noted) == ("note" not in gone)
        assert (pid in expressed) == (pid in mutated) == ("omics" not in gone)


def test_single_rate_is_its_own_setting(tmp_path: Path) -> None:
    generate_demo(tmp_path / "d", patients=12, missing_rate=0.0, single_rate=0.25, slices=2, size=16)
    truth = _truth(tmp_path / "d")["patients"]
    assert sum(len(t["modalities"]) == 1 for t in truth.values()) == 3
    assert sum(len(t["modalities"]) == 3 for t in truth.values()) == 9


def _decodes(path: Path) -> bool:
    try:
        return pydicom.dcmread(path).pixel_array.shape == (SMALL["size"], SMALL["size"])
    except Exception:  # noqa: BLE001 - any failure means "not a usable slice"
        return False


def test_each_bad_input_is_planted_once_on_a_different_patient(demo: Path) -> None:
    bad = _truth(demo)["bad_inputs"]
    kinds = [b["kind"] for b in bad]
    assert sorted(kinds) == sorted(
        {
            "truncated_dicom",
            "non_dicom_file",
            "text_as_dcm",
            "empty_note",
            "duplicate_gene_column",
            "unlabelled_patient",
        }
    )
    patients = [b["patient_id"] for b in bad if b["patient_id"]]
    assert len(patients) == len(set(patients)) == 4
    assert all(_truth(demo)["patients"][p]["missing"] is None for p in patients)


def test_bad_dicom_files_are_present_and_unreadable(demo: Path) -> None:
    bad = _bad(demo)
    truncated = demo / bad["truncated_dicom"]["file"]
    sibling = next(p for p in truncated.parent.iterdir() if p != truncated)
    assert truncated.stat().st_size < 0.6 * sibling.stat().st_size
    assert not _decodes(truncated) and _decodes(sibling)
    assert (demo / bad["non_dicom_file"]["file"]).read_text().strip()
    fake = demo / bad["text_as_dcm"]["file"]
    assert fake.suffix == ".dcm" and bad["text_as_dcm"]["patient_id"] in fake.parts
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(fake)


def test_empty_note_duplicate_gene_and_unlabelled_patient(demo: Path) -> None:
    bad = _bad(demo)
    notes = pd.read_csv(demo / "notes.csv", dtype=str, keep_default_na=False)
    row = notes.iloc[bad["empty_note"]["row"] - 1]
    assert (row["note_id"], row["patient_id"], row["text"]) == (
        bad["empty_note"]["note_id"],
        bad["empty_note"]["patient_id"],
        "",
    )
    assert (notes["text"] == "").sum() == 1
    with (demo / "expression.tsv").open() as fh:
        header = fh.readline().rstrip("\n").split("\t")
    assert header.count(bad["duplicate_gene_column"]["column"]) == 2
    assert len(header) - len(set(header)) == 1
    pid = bad["unlabelled_patient"]["patient_id"]
    assert pid not in set(pd.read_csv(demo / "labels.csv", dtype=str)["patient_id"])
    assert (demo / "dicom" / pid).is_dir() and pid in set(notes["patient_id"])
    assert not _truth(demo)["patients"][pid]["labelled"]


def test_without_inject_bad_nothing_is_planted(clean: Path) -> None:
    assert _truth(clean)["bad_inputs"] == []
    assert all(_decodes(p) for p in _files(clean)[:40])
    assert not (clean / "dicom" / "README.txt").exists()


# ---------------------------------------------------------------------------------------- the folder


def test_refuses_a_non_empty_folder_that_is_not_a_demo_and_leaves_it_untouched(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "labels.csv").write_text("my precious data\n")
    with pytest.raises(InputError, match="not empty"):
        generate_demo(tmp_path / "mine", patients=3, slices=2, size=16)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["labels.csv"]
    assert (tmp_path / "mine" / "labels.csv").read_text() == "my precious data\n"


def test_replaces_a_previous_demo_but_keeps_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    generate_demo(out, patients=8, missing_rate=0.0, slices=2, size=16)
    (out / "my_notes.txt").write_text("keep me")
    generate_demo(out, patients=6, missing_rate=0.0, slices=2, size=16)
    assert (out / MARKER).is_file() and (out / "my_notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in (out / "dicom").iterdir()) == [f"DEMO-{i:04d}" for i in range(1, 7)]


def test_writes_the_demo_edges_next_to_dataset_yaml_and_replaces_them(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    generate_demo(out, patients=6, missing_rate=0.0, slices=2, size=16)
    edges = out / EDGES
    assert edges.read_bytes() == demo_edges().read_bytes()
    assert EDGES in (out / "dataset.yaml").read_text()  # the cohort says where its graph edges are
    added = KnowledgeGraph().add_file(edges)  # as a workflow's knowledge: list reads it
    assert added == len(set(demo_edges_rows()) - _shipped_driver_pairs())
    edges.write_text("stale\n")
    generate_demo(out, patients=6, missing_rate=0.0, slices=2, size=16)
    assert edges.read_bytes() == demo_edges().read_bytes()


@pytest.mark.parametrize("kwargs", [{"patients": 0}, {"missing_rate": 1.0}, {"seed": -1}, {"size": 8}])
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(InputError, match="generate_demo"):
        generate_demo(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------- notes content


def _shipped_driver_pairs() -> set[tuple[str, str]]:
    """(gene, type) ``driver_of`` pairs of the shipped edges.tsv, which the demo file does not repeat."""
    text = (resources.files("clinicmm.knowledge") / "data" / "edges.tsv").read_text(encoding="utf-8")
    fields = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return {(f[1], f[4]) for f in fields[1:] if len(f) > 4 and f[2] == "driver_of"}


def test_demo_edges_are_every_programme_gene_to_the_types_of_its_programme() -> None:
    lines = [line.split("\t") for line in demo_edges().read_text().splitlines() if not line.startswith("#")][1:]
    shipped = {(f[1], f[4]) for f in lines}
    assert all(f[0] == "gene" and f[2] == "driver_of" and f[3] == "cancer_type" for f in lines)
    assert shipped | (_shipped_driver_pairs() & set(demo_edges_rows())) == set(demo_edges_rows())
    assert not shipped & _shipped_driver_pairs()
    for key in ("mapk", "nrf2", "cellcycle"):
        assert 20 <= len(programme_pool(key)) <= 40


def test_each_patient_alters_its_own_subset_of_its_programme(clean: Path) -> None:
    truth = _truth(clean)["patients"]
    by_type: dict[str, list[frozenset[str]]] = {}
    for t in truth.values():
        pool = set(programme_pool(t["programme"]))
        up, mutated = set(t["up_genes"]), set(t["mutated_genes"])
        assert up <= pool and mutated <= pool and not up & mutated
        assert up == set() or 3 <= len(up) <= 5
        by_type.setdefault(t["cancer_type"], []).append(frozenset(up))
    for code, sets in by_type.items():
        altered = [s for s in sets if s]
        assert len(set(altered)) == len(altered), f"{code}: two patients alter the same genes"
        assert len(set().union(*altered)) > 2 * max(map(len, altered)), f"{code}: genes barely vary"


def test_notes_name_the_histology_and_negate_only_other_ones(clean: Path) -> None:
    truth = _truth(clean)["patients"]
    notes = pd.read_csv(clean / "notes.csv", dtype=str)
    assert set(notes["note_type"]) <= {"pathology", "radiology", "oncology consult"}
    assert notes.groupby("patient_id").size().between(1, 3).all()
    assert pd.to_datetime(notes["note_date"], format="%Y-%m-%d").notna().all()
    gene_words = re.compile(r"\b(" + "|".join(programme_genes()) + r")\b")
    named = []
    for pid, text, kind in zip(notes["patient_id"], notes["text"], notes["note_type"]):
        histology = truth[pid]["histology"]
        if kind == "pathology":
            diagnosis = re.search(r"FINAL DIAGNOSIS: (.*)", text).group(1)
            assert not any(h in diagnosis for h in HISTOLOGIES if h != histology)
            named.append(histology in diagnosis)
        assert not any(phrase in text for phrase in NEGATED[histology])
        assert not gene_words.search(text)
    assert 0.5 < np.mean(named) < 0.95  # named or hedged most of the time, omitted in some reports
    assert 0.5 < notes.loc[notes["note_type"] == "pathology", "patient_id"].nunique() / len(set(notes["patient_id"]))


def test_site_words_are_rare(clean: Path) -> None:
    truth = _truth(clean)["patients"]
    text = pd.read_csv(clean / "notes.csv", dtype=str).groupby("patient_id")["text"].apply(" ".join)
    hits = [any(w in text[p] for w in TYPE_BY_CODE[truth[p]["cancer_type"]].site_words) for p in text.index]
    assert 0 < np.mean(hits) < 0.35


def test_programme_driver_mutations_stay_in_their_programme(clean: Path) -> None:
    truth = _truth(clean)["patients"]
    maf = pd.read_csv(clean / "mutations.maf", sep="\t", dtype=str)
    drivers = maf[maf["Hugo_Symbol"].isin(programme_genes())]
    assert len(drivers) > 20
    for gene, sample, cls in zip(
        drivers["Hugo_Symbol"], drivers["Tumor_Sample_Barcode"], drivers["Variant_Classification"]
    ):
        assert gene in truth[sample[:9]]["mutated_genes"] and cls != "Silent"
    assert (maf["Variant_Classification"] == "Silent").any()


# ------------------------------------------------------------------------ each modality separates pairs


def _cross_validated(features: np.ndarray, labels: list[str], k: int | str = 20) -> np.ndarray:
    """4-fold predictions of a linear model on the ``k`` most type-informative features (so a leak stands out)."""
    model = make_pipeline(
        VarianceThreshold(), StandardScaler(), SelectKBest(f_classif, k=k), LogisticRegression(max_iter=2000)
    )
    return cross_val_predict(model, features, labels, cv=StratifiedKFold(4, shuffle=True, random_state=0))


def _group_accuracy(predicted: np.ndarray, labels: list[str], group_of: dict[str, str]) -> float:
    return float(np.mean([group_of[t] == group_of[p] for t, p in zip(labels, predicted)]))


def _check_pairs(predicted: np.ndarray, labels: list[str], group_of: dict[str, str], min_group: float) -> None:
    """The group (pair of types) is mostly right (noisy modalities: ``min_group``), the type within it near chance."""
    truth, pred = np.array(labels), np.asarray(predicted)
    group_acc = _group_accuracy(pred, labels, group_of)
    type_acc = np.mean(truth == pred)
    assert group_acc >= min_group, f"group accuracy {group_acc:.2f}"
    assert type_acc <= 0.78, f"type accuracy {type_acc:.2f}: the modality reveals more than its pair"


def test_expression_reveals_programme_pairs_through_pathways_not_single_genes(clean: Path) -> None:
    """Each patient raises its own few genes of the pathway: the 20 best single genes are near chance (1/3) on 72
    patients, a per-pathway score (mean of each pathway's 4 highest z-scores) finds the programme pair."""
    truth = _truth(clean)["patients"]
    table = pd.read_csv(clean / "expression.tsv", sep="\t", index_col="sample_id")
    labels = [truth[s[:9]]["cancer_type"] for s in table.index]
    group_of = {c: t.programme for c, t in TYPE_BY_CODE.items()}
    log2 = np.log2(table + 1)
    per_gene = _cross_validated(log2.to_numpy(), labels)
    assert _group_accuracy(per_gene, labels, group_of) < 0.6
    z = (log2 - log2.mean()) / log2.std()
    scores = [np.sort(z[list(programme_pool(k))].to_numpy(), axis=1)[:, -4:].mean(axis=1) for k in PROGRAMMES]
    _check_pairs(_cross_validated(np.column_stack(scores), labels, "all"), labels, group_of, min_group=0.75)


def test_notes_alone_separate_histology_pairs_only(clean: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    truth = _truth(clean)["patients"]
    text = pd.read_csv(clean / "notes.csv", dtype=str).groupby("patient_id")["text"].apply(" ".join)
    labels = [truth[p]["cancer_type"] for p in text.index]
    features = TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit_transform(text.to_numpy()).toarray()
    group_of = {c: t.histology for c, t in TYPE_BY_CODE.items()}
    _check_pairs(_cross_validated(features, labels, NOTE_K), labels, group_of, min_group=0.65)


def test_image_alone_separates_site_pairs_only(clean: Path) -> None:
    truth = _truth(clean)["patients"]
    volumes, labels = [], []
    for folder in sorted((clean / "dicom").iterdir()):
        hu = np.stack([pydicom.dcmread(f).pixel_array.astype(float) for f in sorted(folder.rglob("*")) if f.is_file()])
        volumes.append(hu.mean(axis=0).reshape(8, 4, 8, 4).mean(axis=(1, 3)).ravel())  # 8x8 mean-projection
        labels.append(truth[folder.name]["cancer_type"])
    group_of = {c: t.site for c, t in TYPE_BY_CODE.items()}
    _check_pairs(_cross_validated(np.array(volumes), labels), labels, group_of, min_group=0.85)


def test_writes_csv_that_the_csv_module_reads_back(demo: Path) -> None:
    with (demo / "notes.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["note_id", "patient_id", "note_type", "note_date", "text"]
    assert any("\n" in r["text"] for r in rows)


def test_inject_bad_needs_four_complete_patients(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="inject_bad needs at least 4"):
        generate_demo(tmp_path / "tiny", patients=3, missing_rate=0.0, inject_bad=True, slices=2, size=16)
    assert not (tmp_path / "tiny").exists()


def test_missing_and_single_rates_must_leave_complete_patients(tmp_path):
    from clinicmm.demo.generator import generate_demo
    from clinicmm.errors import InputError

    with pytest.raises(InputError, match="missing_rate \\+ single_rate"):
        generate_demo(tmp_path / "d", patients=24, missing_rate=0.5, single_rate=0.5)
