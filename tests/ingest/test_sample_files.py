"""TCGA as the GDC Data Portal downloads it: a folder of one file per sample (each in a folder named by its file id)
and the GDC sample sheet saying which file is which sample. Each file's value column is read as that sample's values
(STAR's tpm / unstranded / fpkm by the unit, miRNA reads per million, SeSAMe betas); a file that is missing, lacks
the column, holds text where a number belongs or is a link out of the dataset skips its sample with the reason. The
GDC's mutations come as one MAF per case: a folder of them is read file by file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from clinicmm.config import DatasetSpec
from clinicmm.errors import InputError
from clinicmm.ingest.genomics import genomics_issues, read_genomics

STAR_HEADER = ["gene_id", "gene_name", "gene_type", "unstranded", "stranded_first", "stranded_second",
               "tpm_unstranded", "fpkm_unstranded", "fpkm_uq_unstranded"]  # fmt: skip
GENES = [("ENSG00000141510.17", "TP53"), ("ENSG00000146648.18", "EGFR"), ("ENSG00000136997.21", "MYC")]
SHEET = ["File ID", "File Name", "Data Category", "Data Type", "Project ID", "Case ID", "Sample ID", "Sample Type"]


def _star(path: Path, counts: list[int]) -> None:
    lines = ["# gene-model: GENCODE v36", "\t".join(STAR_HEADER)]
    lines += [f"{name}\t\t\t{n}\t{n}\t{n}\t\t\t" for name, n in (("N_unmapped", 2045), ("N_multimapping", 350),
                                                                  ("N_noFeature", 10), ("N_ambiguous", 5))]  # fmt: skip
    for (gene, symbol), n in zip(GENES, counts, strict=True):
        lines.append(f"{gene}\t{symbol}\tprotein_coding\t{n}\t{n // 2}\t{n // 2}\t{n / 100}\t{n / 200}\t{n / 150}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _download(tmp_path: Path, counts: list[list[int]], samples: list[str]) -> Path:
    """A GDC download of STAR files under dl/<file id>/ and its sample sheet; returns the sheet."""
    rows = ["\t".join(SHEET)]
    for k, (sample, n) in enumerate(zip(samples, counts, strict=True)):
        file_id, name = f"f{k}-uuid", f"{k:04d}-uuid.rna_seq.augmented_star_gene_counts.tsv"
        _star(tmp_path / "dl" / file_id / name, n)
        rows.append("\t".join([file_id, name, "Transcriptome Profiling", "Gene Expression Quantification",
                               "TCGA-KIRC", sample[:12], sample, "Primary Tumor"]))  # fmt: skip
    (tmp_path / "dl" / "MANIFEST.txt").write_text("id\tfilename\n")
    sheet = tmp_path / "gdc_sample_sheet.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def _spec(tmp_path: Path, **expression: object) -> DatasetSpec:
    table = {"path": "dl", "sample_sheet": "gdc_sample_sheet.tsv", "unit": "tpm"} | expression
    return DatasetSpec(name="gdc", base_dir=tmp_path, genomics={"patient_id_length": 12, "expression": table})


COUNTS = [[100, 2000, 30], [400, 50, 600], [700, 800, 9]]
SAMPLES = ["TCGA-A3-3301-01A", "TCGA-A3-3302-01A", "TCGA-A3-3303-01A"]


def test_a_gdc_download_is_read_one_file_per_sample_by_its_sample_sheet(tmp_path: Path) -> None:
    _download(tmp_path, COUNTS, SAMPLES)
    tables = read_genomics(_spec(tmp_path))
    matrix, samples = tables["expression"], tables["samples"]
    assert list(matrix.index) == [s[:12] for s in SAMPLES] and list(matrix.columns) == ["TP53", "EGFR", "MYC"]
    np.testing.assert_allclose(matrix.to_numpy(), np.array(COUNTS) / 100)  # tpm_unstranded, Ensembl ids harmonised
    assert (samples["status"] == "ok").all() and list(samples["row"]) == [1, 2, 3]
    assert all(Path(s).parent.name == f"f{k}-uuid" for k, s in enumerate(samples["source"]))
    issues = "\n".join(genomics_issues(tables))
    assert "3 of 3 sample files named by gdc_sample_sheet.tsv read" in issues
    assert "1 other file(s) under the folder are not in the sheet" in issues  # the MANIFEST.txt
    assert "4 read-count summary row(s) per file" in issues and "N_unmapped" not in matrix.columns
    assert "name a feature id on two rows" not in issues
    counts = read_genomics(_spec(tmp_path, unit="counts"))["expression"]  # the unit picks STAR's column
    np.testing.assert_allclose(counts.to_numpy(), COUNTS)
    fpkm = read_genomics(_spec(tmp_path, quantity="fpkm_uq_unstranded"))["expression"]
    np.testing.assert_allclose(fpkm.to_numpy(), np.array(COUNTS) / 150)
    first = tmp_path / "dl" / "f0-uuid" / "0000-uuid.rna_seq.augmented_star_gene_counts.tsv"
    first.write_text(first.read_text() + "ENSG00000141510.17\tTP53\tprotein_coding\t9\t9\t9\t999.0\t9\t9\n")
    again = read_genomics(_spec(tmp_path))
    assert again["expression"].loc["TCGA-A3-3301", "TP53"] == 1.0  # the first row of the repeated id
    assert "1 file(s) name a feature id on two rows or more" in "\n".join(genomics_issues(again))


def test_a_sample_whose_file_cannot_be_used_is_skipped_with_its_reason(tmp_path: Path) -> None:
    sheet = _download(tmp_path, COUNTS, SAMPLES)
    (tmp_path / "dl" / "f1-uuid" / "0001-uuid.rna_seq.augmented_star_gene_counts.tsv").unlink()
    bad = tmp_path / "dl" / "f2-uuid" / "0002-uuid.rna_seq.augmented_star_gene_counts.tsv"
    bad.write_text(bad.read_text().replace("\t7.0\t", "\tsecret-text\t"))
    outside = tmp_path.parent / f"{tmp_path.name}-outside"  # a file outside the dataset, reached by a link
    _star(outside / "x.tsv", [1, 2, 3])
    (tmp_path / "dl" / "f3-uuid").mkdir()
    os.symlink(outside / "x.tsv", tmp_path / "dl" / "f3-uuid" / "0003-uuid.tsv")
    with sheet.open("a") as handle:
        handle.write("\t".join(["f3-uuid", "0003-uuid.tsv", "", "", "", "TCGA-A3-3304", "TCGA-A3-3304-01A", ""]) + "\n")
    tables = read_genomics(_spec(tmp_path))
    samples = tables["samples"].set_index("sample_id")
    assert list(tables["expression"].index) == ["TCGA-A3-3301"]  # the one sample left, read as before
    reasons = samples["reason"]
    assert (
        "gdc_sample_sheet.tsv row 2" in reasons["TCGA-A3-3302-01A"] and "is not under dl" in reasons["TCGA-A3-3302-01A"]
    )
    assert "0002-uuid" in reasons["TCGA-A3-3303-01A"] and "'ENSG00000141510.17'" in reasons["TCGA-A3-3303-01A"]
    assert "text, not a finite number" in reasons["TCGA-A3-3303-01A"] and "secret" not in reasons["TCGA-A3-3303-01A"]
    assert (
        "leads outside the dataset" in reasons["TCGA-A3-3304-01A"] and str(outside) not in reasons["TCGA-A3-3304-01A"]
    )
    assert (samples["status"] == "skipped").sum() == 3
    with pytest.raises(
        InputError, match=r"genomics.expression.path is a folder; .* needs genomics.expression.sample_sheet"
    ):
        read_genomics(_spec(tmp_path, sample_sheet=None))
    with pytest.raises(InputError, match=r"'File Name' and 'Sample ID'"):
        sheet.write_text("file\tsample\nx\ty\n")
        read_genomics(_spec(tmp_path))


def test_mirna_and_methylation_files_and_a_tumour_normal_pair(tmp_path: Path) -> None:
    (tmp_path / "dl" / "a").mkdir(parents=True)
    (tmp_path / "dl" / "b").mkdir(parents=True)
    quant = "miRNA_ID\tread_count\treads_per_million_miRNA_mapped\tcross-mapped\n"
    (tmp_path / "dl" / "a" / "a.mirnas.quantification.txt").write_text(quant + "hsa-mir-21\t500\t1000.5\tN\n")
    (tmp_path / "dl" / "b" / "b.mirnas.quantification.txt").write_text(quant + "hsa-mir-21\t20\t40.25\tN\n")
    (tmp_path / "gdc_sample_sheet.tsv").write_text(
        "File ID\tFile Name\tSample ID\n"
        "a\ta.mirnas.quantification.txt\tTCGA-A3-3301-11A, TCGA-A3-3301-01A\n"  # the GDC lists a pair: the tumour read
        "b\tb.mirnas.quantification.txt\tTCGA-A3-3302-01A\n"
    )
    layer = {"name": "mirna", "kind": "mirna", "features": "mirna", "unit": "counts", "path": "dl",
             "sample_sheet": "gdc_sample_sheet.tsv"}  # fmt: skip
    spec = DatasetSpec(name="g", base_dir=tmp_path, genomics={"patient_id_length": 12, "layers": [layer]})
    tables = read_genomics(spec)
    np.testing.assert_allclose(tables["expression"]["mirna:hsa-mir-21"], [1000.5, 40.25])  # reads per million
    assert list(tables["samples"]["sample_id"]) == ["TCGA-A3-3301-01A", "TCGA-A3-3302-01A"]
    # SeSAMe betas: no header, probe and beta; a probe layer mapped by its feature map
    for name, betas in (("a", "0.25\t0.5"), ("b", "0.75\tNA")):
        first, second = betas.split("\t")
        (tmp_path / "dl" / name / f"{name}.level3betas.txt").write_text(f"cg01\t{first}\ncg02\t{second}\n")
    (tmp_path / "gdc_sample_sheet.tsv").write_text(
        "File ID\tFile Name\tSample ID\na\ta.level3betas.txt\tTCGA-A3-3301-01A\nb\tb.level3betas.txt\tTCGA-A3-3302-01A\n"
    )
    (tmp_path / "map.csv").write_text("probe,gene\ncg01,TP53\ncg02,TP53\n")
    layer = {"name": "meth", "kind": "methylation", "features": "probe", "feature_map": "map.csv", "path": "dl",
             "sample_sheet": "gdc_sample_sheet.tsv"}  # fmt: skip
    spec = DatasetSpec(name="g", base_dir=tmp_path, genomics={"patient_id_length": 12, "layers": [layer]})
    np.testing.assert_allclose(read_genomics(spec)["expression"]["meth:TP53"], [0.375, 0.75])  # NA: the probe it has


MAF_HEADER = "Hugo_Symbol\tEntrez_Gene_Id\tVariant_Classification\tTumor_Sample_Barcode\n"


def test_a_folder_of_gdc_mafs_is_read_file_by_file_and_a_broken_one_is_recorded(tmp_path: Path) -> None:
    """The GDC gives one masked somatic MAF per case (``<file id>/<name>.maf.gz``); every one is read, with its rows
    named by their own file; one without the MAF columns is a skipped input and the others load."""
    import gzip

    folder = tmp_path / "mafs"
    for k, (sample, rows) in enumerate([("TCGA-A3-3301-01A-01D", ["TP53\t7157\tMissense_Mutation", "EGFR\t1956\tSilent"]),
                                        ("TCGA-A3-3302-01A-01D", ["MYC\t4609\tNonsense_Mutation"]),
                                        ("TCGA-A3-3302-06A-01D", ["KRAS\t3845\tMissense_Mutation"])]):  # fmt: skip
        (folder / f"id{k}").mkdir(parents=True)
        body = (
            "#version gdc-1.0.0\n"
            + MAF_HEADER
            + "".join(f"{r.split(chr(9), 2)[0]}\t{r.split(chr(9))[1]}\t{r.split(chr(9))[2]}\t{sample}\n" for r in rows)
        )
        with gzip.open(folder / f"id{k}" / f"case{k}.wxs.aliquot_ensemble_masked.maf.gz", "wt") as handle:
            handle.write(body)
    (folder / "bad").mkdir()
    (folder / "bad" / "broken.maf").write_text("gene\tsample\nTP53\tX\n")
    (folder / "annotations.txt").write_text("not a MAF\n")
    spec = DatasetSpec(name="m", base_dir=tmp_path, genomics={"patient_id_length": 12, "mutations": {"path": "mafs"}})
    tables = read_genomics(spec)
    muts = tables["mutations"]
    ok = muts[muts["status"] == "ok"]
    assert sorted(zip(ok["patient_id"], ok["gene"])) == [("TCGA-A3-3301", "EGFR"), ("TCGA-A3-3301", "TP53"),
                                                         ("TCGA-A3-3302", "MYC")]  # fmt: skip
    metastasis = muts[muts["gene"] == "KRAS"].iloc[0]  # the patient's primary (-01) is used, not its -06
    assert (
        metastasis["status"] == "skipped" and "case2.wxs.aliquot_ensemble_masked.maf.gz row 1" in metastasis["reason"]
    )
    broken = muts[muts["source"].str.endswith("broken.maf")].iloc[0]
    assert broken["status"] == "skipped" and "broken.maf under mafs" in broken["reason"]
    assert "Tumor_Sample_Barcode" in broken["reason"]  # names the column it needs
    assert "3 of 4 MAF files read (1 could not be" in "\n".join(genomics_issues(tables))
