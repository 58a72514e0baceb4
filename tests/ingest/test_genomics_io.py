"""Tests of clinicmm.ingest.genomics: expression matrices and mutation lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinicmm.config import ExpressionSpec, MutationsSpec
from clinicmm.errors import ConfigError, InputError
from clinicmm.ingest.genomics import NON_SILENT, expression_by_patient, read_expression, read_mutations

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
    path.write_text("sample_id,TP53,EGFR,KRAS\nS1,1,2,3\nS2,1,high,x\nS3,1,NA,\nS4,-inf,1,1\n")
    matrix, samples = _expr(path)
    assert "row 4, column 'TP53': an infinite value, not a finite number" in samples.loc[3, "reason"]
    samples = samples.iloc[:3]
    assert matrix.index.tolist() == ["S1", "S3"]  # NA and empty cells are missing values, not errors
    assert np.isnan(matrix.loc["S3", "EGFR"]) and np.isnan(matrix.loc["S3", "KRAS"])
    assert samples["status"].tolist() == ["ok", "skipped", "ok"]
    reason = samples.loc[1, "reason"]
    assert "expression.csv row 2, column 'EGFR': text, not a finite number" in reason
    assert "high" not in reason  # a cell may hold anything (a name pasted in the wrong place): never echoed


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


def test_a_tcga_patients_tumour_sample_is_kept_before_its_normal_tissue_sample(tmp_path: Path) -> None:
    """Xena / Firehose tables hold normal-tissue samples (type 11) beside the tumours, in no set order: the tumour
    sample is kept whichever comes first, the normal one skipped saying why; a patient with only a normal sample
    keeps it and the report counts it; among tumour samples the primary (01) comes before a metastasis (06)."""
    path = tmp_path / "expression.tsv"
    path.write_text(
        "sample_id\tTP53\nTCGA-AB-0001-11A\t1\nTCGA-AB-0001-01A\t2\nTCGA-AB-0002-11B\t3\n"
        "TCGA-AB-0003-06A\t4\nTCGA-AB-0003-01B\t5\nTCGA-AB-0003-01A\t6\n"
    )
    matrix, samples = _expr(path, TCGA)
    assert samples["status"].tolist() == ["skipped", "ok", "ok", "skipped", "ok", "skipped"]
    reason = samples.loc[0, "reason"]
    assert "row 1 is a normal-tissue sample (TCGA sample type 11)" in reason
    assert "tumour sample (TCGA sample type 01) in row 2, which is kept" in reason
    assert "tumour sample (TCGA sample type 06)" in samples.loc[3, "reason"]
    assert "kept the first" in samples.loc[5, "reason"] and "row 5" in samples.loc[5, "reason"]
    by_patient = expression_by_patient(matrix, samples)
    assert by_patient["TP53"].to_dict() == {"TCGA-AB-0001": 2.0, "TCGA-AB-0002": 3.0, "TCGA-AB-0003": 5.0}
    assert any("1 patient(s) have only a normal-tissue sample" in line for line in matrix.attrs["issues"])
    transposed = tmp_path / "by_gene.tsv"  # genes x samples: the same choice, the reasons naming file columns
    transposed.write_text("gene\tTCGA-AB-0001-11A\tTCGA-AB-0001-01A\nTP53\t1\t2\n")
    matrix, samples = _expr(transposed, TCGA, orientation="genes_x_samples")
    assert samples["status"].tolist() == ["skipped", "ok"]
    assert "column 2 is a normal-tissue" in samples.loc[0, "reason"] and "column 3, which" in samples.loc[0, "reason"]


def test_a_maf_uses_the_mutations_of_the_sample_the_expression_tables_keep(tmp_path: Path) -> None:
    """A patient with a primary tumour (-01) and a metastasis (-06) in the MAF: the primary's mutations are used, the
    metastasis's skipped saying why (as the expression tables keep the primary); two aliquots of one type both stay,
    and a patient with only a metastasis keeps it."""
    maf = tmp_path / "cohort.maf"
    maf.write_text(
        "Hugo_Symbol\tVariant_Classification\tTumor_Sample_Barcode\n"
        "KRAS\tMissense_Mutation\tTCGA-AB-0001-06A\nTP53\tMissense_Mutation\tTCGA-AB-0001-01A\n"
        "EGFR\tNonsense_Mutation\tTCGA-AB-0001-01B\nTP53\tMissense_Mutation\tTCGA-AB-0002-06A\n"
    )
    muts = read_mutations(MutationsSpec(path=maf), maf, TCGA)
    assert muts["status"].tolist() == ["skipped", "ok", "ok", "ok"]
    assert muts.loc[0, "reason"] == (
        "cohort.maf row 1: a mutation of the patient's tumour sample (TCGA sample type 06), whose tumour sample (TCGA "
        "sample type 01) is used (one tumour sample per patient, as in the expression tables)"
    )


def test_a_second_header_row_and_a_text_column_are_left_out_not_every_sample(tmp_path: Path) -> None:
    """Firehose writes a second header row (``gene_id / normalized_count`` under ``Hybridization REF``); tables
    often carry a text column (sample type) beside the genes. Each holds text in every sample and a number in none:
    left out and named in the report, the samples kept (before, each sample was skipped for that one cell)."""
    firehose = tmp_path / "rnaseq.txt"
    firehose.write_text(
        "Hybridization REF\tTCGA-AB-0001-01A-11R\tTCGA-AB-0002-01A-11R\n"
        "gene_id\tnormalized_count\tnormalized_count\nTP53|7157\t310.5\t220.1\nEGFR|1956\t12.2\t40.3\n"
    )
    matrix, samples = _expr(firehose, TCGA, orientation="genes_x_samples", unit="counts")
    assert samples["status"].tolist() == ["ok", "ok"] and matrix.columns.tolist() == ["TP53|7157", "EGFR|1956"]
    assert matrix.attrs["issues"] == [
        "rnaseq.txt: 1 row(s) hold text and no number in any sample ('gene_id'): read as header rows, not genes, "
        "and left out"
    ]
    wide = tmp_path / "wide.csv"
    wide.write_text("sample_id,sample_type,TP53,EGFR\nS1,Primary Tumor,1,2\nS2,Solid Tissue Normal,3,\nS3,,5,x\n")
    matrix, samples = _expr(wide)
    assert matrix.columns.tolist() == ["TP53", "EGFR"] and samples["status"].tolist() == ["ok", "ok", "skipped"]
    assert "('sample_type'): read as annotation columns" in matrix.attrs["issues"][0]
    assert "Primary" not in " ".join(matrix.attrs["issues"])  # named by its header, its cells not shown
    assert "row 3, column 'EGFR': text" in samples.loc[2, "reason"]  # a gene column with numbers: the cell is bad
    one = tmp_path / "one.csv"  # one patient to predict with a typo: the sample is skipped, not the gene dropped
    one.write_text("sample_id,TP53,EGFR\nS1,1,high\n")
    matrix, samples = _expr(one)
    assert samples["status"].tolist() == ["skipped"] and "row 1, column 'EGFR': text" in samples.loc[0, "reason"]


def test_gene_annotation_columns_of_a_genes_by_samples_table_are_not_samples(tmp_path: Path) -> None:
    """cBioPortal writes Hugo_Symbol and Entrez_Gene_Id before the samples, GISTIC Gene Symbol, Locus ID and
    Cytoband: those columns are gene annotation, not samples (before, 'Entrez_Gene_Id' became a sample whose values
    were gene ids, and 'Cytoband' a sample skipped for text)."""
    cbio = tmp_path / "data_mrna_seq_v2_rsem.txt"
    cbio.write_text("Hugo_Symbol\tEntrez_Gene_Id\tS1\tS2\nTP53\t7157\t10.5\t3.2\nEGFR\t1956\t4.0\t8.0\n")
    matrix, samples = _expr(cbio, orientation="genes_x_samples", unit="counts")
    assert samples["sample_id"].tolist() == ["S1", "S2"] and samples["row"].tolist() == [3, 4]  # file columns
    assert matrix.columns.tolist() == ["TP53", "EGFR"] and matrix.loc["S2", "EGFR"] == 8.0
    assert matrix.attrs["issues"] == [
        "data_mrna_seq_v2_rsem.txt: column(s) 'Entrez_Gene_Id' read as gene annotation beside the gene names, not as "
        "samples"
    ]
    gistic = tmp_path / "all_thresholded.by_genes.txt"
    gistic.write_text("Gene Symbol\tLocus ID\tCytoband\tS1\nTP53\t7157\t17p13.1\t-1\nMYC\t4609\t8q24.21\t2\n")
    matrix, samples = _expr(gistic, orientation="genes_x_samples", unit="log")
    assert samples["status"].tolist() == ["ok"] and matrix.loc["S1"].tolist() == [-1.0, 2.0]
    assert "'Locus ID', 'Cytoband' read as gene annotation" in matrix.attrs["issues"][0]


def test_missing_sample_column_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "expression.csv"
    path.write_text("barcode,TP53\nS1,1\n")
    with pytest.raises(InputError) as err:
        _expr(path)
    message = str(err.value)
    assert "expression.csv" in message and "genomics.expression.sample_column" in message
    assert "'sample_id'" in message and "'barcode'" in message


def test_an_unnamed_first_column_is_read_as_the_sample_ids(tmp_path: Path) -> None:
    """R's write.csv and pandas' to_csv write row names under an empty header cell: they are the sample ids (a
    gene has a name), said in the report; a named column other than sample_id is still an error naming the key."""
    path = tmp_path / "expression.csv"
    pd.DataFrame({"TP53": [1.0, 2.0]}, index=["S1", "S2"]).to_csv(path)
    matrix, samples = _expr(path)
    assert matrix.index.tolist() == ["S1", "S2"] and matrix.columns.tolist() == ["TP53"]
    assert "unnamed first column read as the sample ids" in matrix.attrs["issues"][0]
    pd.DataFrame({"TP53": [1.0, 2.0]}, index=["S1", "S2"]).to_parquet(tmp_path / "expression.parquet")
    assert _expr(tmp_path / "expression.parquet")[0].index.tolist() == ["S1", "S2"]  # a stored index: the same
    (tmp_path / "named.csv").write_text("barcode,TP53\nS1,1\n")
    with pytest.raises(InputError, match="genomics.expression.sample_column"):
        _expr(tmp_path / "named.csv")


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
    assert samples.loc[1, "reason"].startswith("expression.tsv row 3, column 'S2': text, not a finite number")
    assert "n/a?" not in samples.loc[1, "reason"]
    assert matrix.attrs["issues"] == ["expression.tsv: gene row 'TP53' appears 2 times; kept the first"]


# ------------------------------------------------------------------------------------- gene harmonisation

HGNC = """hgnc_id\tsymbol\tstatus\talias_symbol\tprev_symbol\tensembl_gene_id\tentrez_id
HGNC:1\tSEPTIN7\tApproved\tCDC10\tSEPT7\tENSG00000122545\t989
HGNC:4\tTP53\tApproved\tp53\t\tENSG00000141510\t7157
HGNC:5\tEGFR\tApproved\tERBB1\t\tENSG00000146648\t1956
"""


def _harmonizer(tmp_path: Path):
    from clinicmm.ingest.gene_names import GeneHarmonizer

    (tmp_path / "hgnc.tsv").write_text(HGNC)
    return GeneHarmonizer.from_table(tmp_path / "hgnc.tsv")


def test_expression_genes_harmonised_with_duplicates_and_unmapped_counted(tmp_path: Path) -> None:
    path = tmp_path / "expression.tsv"
    path.write_text(
        "sample_id\tENSG00000141510.17\tSEPT7\tMYSTERY\tp53\tEGFR\tEGFR\nS1\t1\t2\t3\t4\t5\t6\nS2\t1\tx\t3\t4\t5\t6\n"
    )
    spec = ExpressionSpec(path=path)
    matrix, samples = read_expression(spec, path, None, _harmonizer(tmp_path))
    assert matrix.columns.tolist() == ["TP53", "SEPTIN7", "MYSTERY", "EGFR"]
    assert matrix.loc["S1"].tolist() == [1.0, 2.0, 3.0, 5.0]  # the first of TP53's two names kept
    genes = matrix.attrs["genes"]
    assert (genes["columns"], genes["repeated"], genes["duplicates"], genes["unmapped"]) == (6, 1, 1, 1)
    assert (genes["ensembl"], genes["previous"], genes["alias"], genes["features"]) == (1, 1, 1, 4)
    assert any("'p53' -> 'TP53'" in line for line in matrix.attrs["issues"])
    assert any("'MYSTERY'" in line and "kept as given" in line for line in matrix.attrs["issues"])
    assert "row 2, column 'SEPT7'" in samples.loc[1, "reason"]  # messages name the file's own column
    dropped, _ = read_expression(spec, path, None, _harmonizer(tmp_path), drop_unmapped=True)
    assert "MYSTERY" not in dropped.columns and dropped.attrs["genes"]["dropped_unmapped"] == 1


def test_genes_x_samples_harmonised_too(tmp_path: Path) -> None:
    path = tmp_path / "expression.csv"
    path.write_text("gene,S1,S2\nSEPT7|989,1,2\nTP53|7157,3,4\n?|1956,5,6\n")
    spec = ExpressionSpec(path=path, orientation="genes_x_samples")
    matrix, _ = read_expression(spec, path, None, _harmonizer(tmp_path))
    assert matrix.columns.tolist() == ["SEPTIN7", "TP53", "EGFR"]
    assert matrix["EGFR"].tolist() == [5.0, 6.0]
    assert (matrix.attrs["genes"]["approved"], matrix.attrs["genes"]["entrez"]) == (1, 2)


def test_mutation_genes_harmonised_and_unresolved_rows_skipped_on_request(tmp_path: Path) -> None:
    path = tmp_path / "cohort.maf"
    path.write_text(MAF.replace("KRAS", "SEPT7").replace("TTN", "p53"))
    muts = read_mutations(MutationsSpec(path=path), path, TCGA, _harmonizer(tmp_path))
    assert muts["gene"].tolist()[:3] == ["TP53", "TP53", "SEPTIN7"]
    assert muts.attrs["genes"]["names"] == 4 and muts.attrs["genes"]["alias"] == 1
    strict = read_mutations(MutationsSpec(path=path), path, None, _harmonizer(tmp_path), drop_unmapped=True)
    assert strict["status"].tolist() == ["ok", "ok", "ok", "skipped", "ok"]  # row 4 has no gene at all
    path.write_text(MAF.replace("EGFR", "MYSTERY"))
    strict = read_mutations(MutationsSpec(path=path), path, None, _harmonizer(tmp_path), drop_unmapped=True)
    assert "gene 'MYSTERY' in cohort.maf row 5" in strict.loc[4, "reason"]


def test_read_genomics_uses_patient_id_length_and_a_users_hgnc_table(tmp_path: Path) -> None:
    from clinicmm.config import DatasetSpec
    from clinicmm.ingest.genomics import gene_counts, genomics_issues, read_genomics

    (tmp_path / "hgnc.tsv").write_text(HGNC)
    (tmp_path / "expression.csv").write_text("sample_id,SEPT7,TP53\nTCGA-AB-0001-01A,1,2\nTCGA-AB-01,3,4\n")
    spec = DatasetSpec(
        name="t", base_dir=tmp_path,
        genomics={"expression": {"path": "expression.csv"}, "patient_id_length": 12, "genes": {"hgnc_table": "hgnc.tsv"}},
    )  # fmt: skip
    tables = read_genomics(spec)
    assert tables["expression"].index.tolist() == ["TCGA-AB-0001"]
    assert tables["expression"].columns.tolist() == ["SEPTIN7", "TP53"]
    assert "shorter than genomics.patient_id_length 12" in tables["samples"].loc[1, "reason"]
    assert gene_counts(tables)["expression"]["previous"] == 1
    assert any("1 renamed" in line for line in genomics_issues(tables))
    off = spec.model_copy(
        update={
            "genomics": spec.genomics.model_copy(
                update={"genes": spec.genomics.genes.model_copy(update={"harmonize": False})}
            )
        }
    )
    assert read_genomics(off)["expression"].columns.tolist() == ["SEPT7", "TP53"]


def test_pattern_and_length_together_are_a_config_error() -> None:
    from pydantic import ValidationError

    from clinicmm.config import GenomicsSpec

    with pytest.raises(ValidationError, match="patient_id_pattern or genomics.patient_id_length"):
        GenomicsSpec(mutations={"path": "m.maf"}, patient_id_pattern=TCGA, patient_id_length=12)
