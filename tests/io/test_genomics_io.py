"""Tests of clinicmm.io.genomics: expression matrices and mutation lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinicmm.config import ExpressionSpec, MutationsSpec
from clinicmm.errors import ConfigError, InputError
from clinicmm.io.genomics import NON_SILENT, expression_by_patient, read_expression, read_mutations

TCGA = "^(TCGA-..-....)"


def _matrix() -> pd.DataFrame:
    values = np.arange(12, dtype=float).reshape(3, 4) + 0.5
    return pd.DataFrame(values, index=pd.Index(["S1", "S2", "0012"], name="sample_id"),
                        columns=["TP53", "EGFR", "KRAS", "MYC"])  # fmt: skip


def _expr(path: Path, pattern: str | None = None, **spec: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return read_expression(ExpressionSpec(path=path, **spec), path, pattern)


def test_orientations_give_the_same_matrix(tmp_path: Path) -> None:
    _matrix().to_csv(tmp_path / "sxg.tsv", sep="\t")
    _matrix().T.rename_axis("gene").to_csv(tmp_path / "gxs.csv")
    a, samples_a = _expr(tmp_path / "sxg.tsv")
    b, samples_b = _expr(tmp_path / "gxs.csv", orientation="genes_x_samples")
    pd.testing.assert_frame_equal(a, _matrix())
    pd.testing.assert_frame_equal(b, _matrix())
    assert samples_a["row"].tolist() == [1, 2, 3]  # data rows
    assert samples_b["row"].tolist() == [2, 3, 4]  # file columns (gene symbols in column 1)
    assert a.index.tolist()[2] == "0012"  # id kept as text


def test_gzip_and_parquet_read_like_plain_text(tmp_path: Path) -> None:
    _matrix().to_csv(tmp_path / "expr.tsv.gz", sep="\t")
    _matrix().reset_index().to_parquet(tmp_path / "expr.parquet")
    _matrix().to_parquet(tmp_path / "indexed.parquet")  # sample ids stored as the pandas index
    pd.testing.assert_frame_equal(_expr(tmp_path / "expr.tsv.gz")[0], _matrix())
    pd.testing.assert_frame_equal(_expr(tmp_path / "expr.parquet")[0], _matrix())
    pd.testing.assert_frame_equal(_expr(tmp_path / "indexed.parquet")[0], _matrix())


def test_duplicated_gene_column_keeps_first_and_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "expression.tsv"
    path.write_text("sample_id\tTP53\tEGFR\tTP53\nS1\t1\t2\t9\nS2\t3\t4\t9\n")
    matrix, _ = _expr(path)
    assert matrix.columns.tolist() == ["TP53", "EGFR"]
    assert matrix["TP53"].tolist() == [1.0, 3.0]
    assert matrix.attrs["issues"] == ["expression.tsv: gene column 'TP53' appears 2 times; kept the first"]


def test_non_numeric_sample_skipped_naming_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "expression.csv"
    path.write_text("sample_id,TP53,EGFR,KRAS\nS1,1,2,3\nS2,1,high,x\nS3,1,NA,\n")
    matrix, samples = _expr(path)
    assert matrix.index.tolist() == ["S1", "S3"]  # NA and empty cells are missing values, not errors
    assert np.isnan(matrix.loc["S3", "EGFR"]) and np.isnan(matrix.loc["S3", "KRAS"])
    assert samples["status"].tolist() == ["ok", "skipped", "ok"]
    reason = samples.loc[1, "reason"]
    assert "expression.csv row 2, column 'EGFR'" in reason and "'high'" in reason


def test_negative_tpm_skipped_but_allowed_for_log_values(tmp_path: Path) -> None:
    path = tmp_path / "expression.csv"
    path.write_text("sample_id,TP53,EGFR\nS1,1,2\nS2,1,-0.5\n")
    _, samples = _expr(path, unit="tpm")
    assert samples["status"].tolist() == ["ok", "skipped"]
    assert "row 2, column 'EGFR'" in samples.loc[1, "reason"] and "negative" in samples.loc[1, "reason"]
    matrix, _ = _expr(path, unit="log")
    assert matrix.loc["S2", "EGFR"] == -0.5


def test_tcga_barcodes_map_to_patients(tmp_path: Path) -> None:
    path = tmp_path / "expression.csv"
    path.write_text(
        "sample_id,TP53\nTCGA-AB-0001-01A,1\nTCGA-AB-0002-01A,2\nTCGA-AB-0001-11A,3\nTCGA-AB-0001-01A,4\nNORMAL-7,5\n"
    )
    matrix, samples = _expr(path, TCGA)
    assert samples["patient_id"].tolist()[:4] == ["TCGA-AB-0001", "TCGA-AB-0002", "TCGA-AB-0001", "TCGA-AB-0001"]
    assert samples["status"].tolist() == ["ok", "ok", "skipped", "skipped", "skipped"]
    assert "same patient" in samples.loc[2, "reason"]
    assert "repeats row 1" in samples.loc[3, "reason"]
    assert "genomics.patient_id_pattern" in samples.loc[4, "reason"] and "row 5" in samples.loc[4, "reason"]
    by_patient = expression_by_patient(matrix, samples)
    assert by_patient.index.tolist() == ["TCGA-AB-0001", "TCGA-AB-0002"]
    assert by_patient["TP53"].tolist() == [1.0, 2.0]


def test_missing_sample_column_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "expression.csv"
    path.write_text("barcode,TP53\nS1,1\n")
    with pytest.raises(InputError) as err:
        _expr(path)
    message = str(err.value)
    assert "expression.csv" in message and "genomics.expression.sample_column" in message
    assert "'sample_id'" in message and "'barcode'" in message


def test_bad_pattern_and_bad_suffix_raise(tmp_path: Path) -> None:
    path = tmp_path / "expression.csv"
    path.write_text("sample_id,TP53\nS1,1\n")
    with pytest.raises(ConfigError, match="genomics.patient_id_pattern"):
        _expr(path, "^(unclosed")
    odd = tmp_path / "expression.xlsx"
    odd.write_bytes(b"x")
    with pytest.raises(InputError, match=r"\.csv, \.tsv, \.txt, \.parquet"):
        _expr(odd)


MAF = """#version 2.4
#annotated by a pipeline
Hugo_Symbol\tEntrez_Gene_Id\tVariant_Classification\tTumor_Sample_Barcode
TP53\t7157\tMissense_Mutation\tTCGA-AB-0001-01A
TTN\t7273\tSilent\tTCGA-AB-0001-01A
KRAS\t3845\tnonsense_mutation\tTCGA-AB-0002-01A
\t0\tMissense_Mutation\tTCGA-AB-0002-01A
EGFR\t1956\tMissense_Mutation\tCELL-LINE-9
"""


def test_maf_with_comment_lines(tmp_path: Path) -> None:
    path = tmp_path / "cohort.maf.gz"
    import gzip

    with gzip.open(path, "wt") as handle:
        handle.write(MAF)
    muts = read_mutations(MutationsSpec(path=path), path, TCGA)
    assert muts.columns.tolist() == ["patient_id", "sample_id", "gene", "variant_class", "non_silent",
                                     "source", "row", "status", "reason"]  # fmt: skip
    assert muts["gene"].tolist() == ["TP53", "TTN", "KRAS", "", "EGFR"]
    assert muts["non_silent"].tolist() == [True, False, True, True, True]
    assert muts["patient_id"].tolist()[:3] == ["TCGA-AB-0001", "TCGA-AB-0001", "TCGA-AB-0002"]
    assert muts["status"].tolist() == ["ok", "ok", "ok", "skipped", "skipped"]
    assert "empty gene symbol in cohort.maf.gz row 4" in muts.loc[3, "reason"]
    assert "Silent" not in NON_SILENT and "Splice_Site" in NON_SILENT and isinstance(NON_SILENT, frozenset)


def test_maf_missing_column_names_key(tmp_path: Path) -> None:
    path = tmp_path / "cohort.maf"
    path.write_text(MAF)
    with pytest.raises(InputError, match=r"'Gene'.*genomics\.mutations\.gene_column.*'Hugo_Symbol'"):
        read_mutations(MutationsSpec(path=path, gene_column="Gene"), path, None)


def test_undecodable_expression_names_file_and_encoding(tmp_path: Path) -> None:
    path = tmp_path / "expression.csv"
    path.write_bytes("sample_id,G\u00e9ne\nS1,1\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"expression\.csv.*utf-8"):
        _expr(path)


def test_genes_x_samples_bad_cell_and_duplicate_gene_row(tmp_path: Path) -> None:
    path = tmp_path / "expression.tsv"
    path.write_text("gene\tS1\tS2\tS3\nTP53\t1\t2\t3\nTP53\t7\t7\t7\nEGFR\t4\tn/a?\t6\n")
    matrix, samples = _expr(path, orientation="genes_x_samples")
    assert matrix.index.tolist() == ["S1", "S3"] and matrix.columns.tolist() == ["TP53", "EGFR"]
    assert matrix.loc["S3"].tolist() == [3.0, 6.0]
    assert samples.loc[1, "reason"].startswith("expression.tsv row 3, column 'S2': value 'n/a?'")
    assert matrix.attrs["issues"] == ["expression.tsv: gene row 'TP53' appears 2 times; kept the first"]
