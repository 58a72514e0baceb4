"""``genomics.mutations`` with ``format: matrix``: a wide table of mutation flags (one row per sample, one column
per gene, as TCGA-style cohorts and panel exports give them) reads as the mutation list it stands for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from clinicmm.config import DatasetSpec, MutationsSpec
from clinicmm.encode.genomics import GenomicsPreprocessor
from clinicmm.ingest.genomics import read_genomics, read_mutations

TCGA = "^(TCGA-..-....)"
MAF = (
    "Hugo_Symbol\tVariant_Classification\tTumor_Sample_Barcode\n"
    "TP53\tMissense_Mutation\tTCGA-AB-0001-01A\nKRAS\tNonsense_Mutation\tTCGA-AB-0001-01A\n"
    "TP53\tFrame_Shift_Del\tTCGA-AB-0002-01A\nEGFR\tSilent\tTCGA-AB-0003-01A\n"
)
FLAGS = (  # the same non-silent calls as flags; patient 3's silent EGFR change is no flag, patient 4 has none
    "sample\tTP53\tKRAS\tEGFR\nTCGA-AB-0001-01A\t1\t1\t0\nTCGA-AB-0002-01A\t1\t0\t0\n"
    "TCGA-AB-0003-01A\t0\t0\t0\nTCGA-AB-0004-01A\t0\t\tNA\n"
)


def _ok(muts: pd.DataFrame) -> set[tuple[str, str]]:
    rows = muts[(muts["status"] == "ok") & muts["non_silent"]]
    return set(zip(rows["patient_id"], rows["gene"], strict=True))


def test_a_flag_matrix_reads_as_the_mutation_list_it_stands_for_and_encodes_the_same(tmp_path: Path) -> None:
    (tmp_path / "cohort.maf").write_text(MAF)
    (tmp_path / "flags.tsv").write_text(FLAGS)
    maf = read_mutations(MutationsSpec(path=tmp_path / "cohort.maf"), tmp_path / "cohort.maf", TCGA)
    flags = read_mutations(MutationsSpec(path=tmp_path / "flags.tsv", format="matrix"), tmp_path / "flags.tsv", TCGA)
    assert _ok(flags) == _ok(maf) == {("TCGA-AB-0001", "TP53"), ("TCGA-AB-0001", "KRAS"), ("TCGA-AB-0002", "TP53")}
    assert flags["row"].tolist() == [1, 2, 1]  # the sample's data row, for the report
    patients = ["TCGA-AB-0001", "TCGA-AB-0002", "TCGA-AB-0003", "TCGA-AB-0004"]
    encoded = []
    for muts in (maf, flags):
        pre = GenomicsPreprocessor("log", min_mutated=1)
        pre.fit(None, muts)
        encoded.append((pre.mutation_genes, pre.features(None, muts, patients), pre.evidence(None, muts, patients)))
    assert encoded[0][0] == encoded[1][0] == ["KRAS", "TP53"]
    np.testing.assert_array_equal(encoded[0][1], encoded[1][1])
    assert encoded[1][1].tolist() == [[1, 1], [0, 1], [0, 0], [0, 0]]
    assert encoded[0][2] == encoded[1][2] and encoded[1][2]["TCGA-AB-0001"] == ["KRAS", "TP53"]  # graph links


def test_counts_and_words_read_as_flags_and_a_cell_that_is_neither_is_skipped_naming_row_and_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "flags.csv"
    path.write_text("Tumor_Sample_Barcode,TP53,KRAS,EGFR,MYC\nS1,2,true,0.0,yes\nS2,Missense,FALSE,-1,WT\n")
    muts = read_mutations(MutationsSpec(path=path, format="matrix"), path, None)
    assert _ok(muts) == {("S1", "TP53"), ("S1", "KRAS"), ("S1", "MYC")}
    skipped = muts[muts["status"] == "skipped"]
    assert sorted(skipped["gene"]) == ["EGFR", "TP53"] and set(skipped["patient_id"]) == {"S2"}
    reasons = " ".join(skipped["reason"])
    assert "flags.csv row 2, column 'TP53': not 0 or 1" in reasons and "column 'EGFR'" in reasons
    assert "Missense" not in reasons  # the cell's content is not echoed


def test_the_sample_column_is_used_when_present_and_a_one_column_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flags.tsv"
    path.write_text("TP53\tid\nTrue\tP9\n")
    muts = read_mutations(MutationsSpec(path=path, format="matrix", sample_column="id"), path, None)
    assert _ok(muts) == {("P9", "TP53")}
    path.write_text("id\nP9\n")
    with pytest.raises(Exception, match=r"flags\.tsv.*sample id column and one column per gene"):
        read_mutations(MutationsSpec(path=path, format="matrix"), path, None)
    with pytest.raises(ValidationError, match="format"):
        MutationsSpec(path=path, format="vcf")


def test_a_dataset_with_a_flag_matrix_reads_through_read_genomics_with_gene_names_harmonised(tmp_path: Path) -> None:
    (tmp_path / "flags.tsv").write_text("sample\tp53\tKRAS\nP1\t1\t0\nP2\t0\t1\n")
    spec = DatasetSpec(name="t", base_dir=tmp_path, genomics={"mutations": {"path": "flags.tsv", "format": "matrix"}})
    muts = read_genomics(spec)["mutations"]
    assert _ok(muts) == {("P1", "TP53"), ("P2", "KRAS")}  # p53 is TP53's alias in the shipped HGNC table


def test_a_patient_with_a_row_of_zeros_has_omics_measured_and_one_absent_from_the_matrix_has_none(
    tmp_path: Path,
) -> None:
    from clinicmm.ingest.cohort import build_cohort

    (tmp_path / "labels.csv").write_text("patient_id,cancer_type\nP1,LUAD\nP2,LUSC\nP3,LUAD\nP4,LUSC\n")
    (tmp_path / "flags.tsv").write_text("sample\tTP53\tKRAS\nP1\t1\t0\nP2\t0\t0\nP3\t0\t1\n")
    spec = DatasetSpec(
        name="t", base_dir=tmp_path,
        labels={"path": "labels.csv", "patient_column": "patient_id", "label_column": "cancer_type"},
        genomics={"mutations": {"path": "flags.tsv", "format": "matrix"}},
    )  # fmt: skip
    manifest = build_cohort(spec, split=False).manifest.set_index("patient_id")
    omics = manifest.filter(like="omics").iloc[:, 0].astype(bool)
    assert omics.to_dict() == {"P1": True, "P2": True, "P3": True, "P4": False}


def test_a_repeated_gene_column_keeps_the_first_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "flags.tsv"
    path.write_text("sample\tTP53\tTP53\tKRAS\nP1\t0\t1\t1\n")
    muts = read_mutations(MutationsSpec(path=path, format="matrix"), path, None)
    assert _ok(muts) == {("P1", "KRAS")}
    assert any("gene column 'TP53' appears 2 times; kept the first" in line for line in muts.attrs["issues"])


CELLS = ["0", "1", "", "NA", "2", "0.0", "-1", "true", "No", "WT", "x", "1e3", "nan", "Missense_Mutation"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cells=st.lists(st.lists(st.sampled_from(CELLS), min_size=3, max_size=3), min_size=1, max_size=6),
    sep=st.sampled_from([",", "\t"]),
)
def test_every_cell_is_read_as_mutated_absent_or_skipped_with_its_row_and_column(
    tmp_path: Path, cells: list[list[str]], sep: str
) -> None:
    from clinicmm.ingest.genomics import _mutated

    path = tmp_path / ("flags.csv" if sep == "," else "flags.tsv")
    genes = ["TP53", "KRAS", "EGFR"]
    path.write_text(sep.join(["sample", *genes]) + "\n" + "".join(
        sep.join([f"P{i}", *row]) + "\n" for i, row in enumerate(cells)))  # fmt: skip
    muts = read_mutations(MutationsSpec(path=path, format="matrix"), path, None)
    states = {(f"P{i}", g): _mutated(v) for i, row in enumerate(cells) for g, v in zip(genes, row, strict=True)}
    assert _ok(muts) == {k for k, v in states.items() if v is True}
    skipped = muts[muts["status"] == "skipped"]
    assert set(zip(skipped["patient_id"], skipped["gene"], strict=True)) == {k for k, v in states.items() if v is None}
    for (patient, gene), reason in zip(zip(skipped["patient_id"], skipped["gene"], strict=True), skipped["reason"]):
        assert f"row {int(patient[1:]) + 1}, column {gene!r}" in reason
        assert "Missense" not in reason and "'x'" not in reason
