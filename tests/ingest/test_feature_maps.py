"""Probe tables as TCGA and array vendors publish them: feature maps read as downloaded (an Illumina manifest with its
[Heading] and [Controls] sections, a GEO platform table, a UCSC Xena probeMap), and Firehose's methylation and
miRNA tables, whose every sample spans several columns named by a second header row, read as one value per sample
with the table's own Gene_Symbol column as the probe map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinicmm.config import DatasetSpec
from clinicmm.errors import InputError
from clinicmm.ingest.feature_maps import read_feature_map, split_genes
from clinicmm.ingest.genomics import gene_counts, genomics_issues, read_genomics

MANIFEST_COLUMNS = ["IlmnID", "Name", "AddressA_ID", "Infinium_Design_Type", "CHR", "MAPINFO", "UCSC_RefGene_Name",
                    "UCSC_RefGene_Group"]  # fmt: skip


def _manifest(path: Path, probes: list[tuple[str, str, str]]) -> Path:
    """An Illumina manifest as downloaded: heading lines, [Assay], the probes, then a [Controls] section."""
    heading = ["Illumina, Inc.,,", "[Heading],,", "Descriptor File Name,MethylationEPIC_v2.0.bpm,", "Loci Count ,3,",
               "[Assay],,"]  # fmt: skip
    rows = [",".join([ilmn, name, "1234", "II", "17", "7571720", genes, "Body"]) for ilmn, name, genes in probes]
    controls = ["[Controls],,,", "21630339,STAINING,Red,DNP (High)", "27630314,STAINING,Purple,DNP (Bkg)"]
    path.write_text("\n".join([*heading, ",".join(MANIFEST_COLUMNS), *rows, *controls]) + "\n")
    return path


def test_an_illumina_manifest_is_read_as_downloaded(tmp_path: Path) -> None:
    path = _manifest(tmp_path / "EPIC_v2.csv", [("cg01_TC21", "cg01", "TP53;TP53"), ("cg02_BC11", "cg02", ""),
                                                ("cg03_TC11", "cg03", "EGFR;ERBB2;EGFR")])  # fmt: skip
    read = read_feature_map(path, "genomics.layers[0].feature_map")
    # EPIC v2 names a probe with (IlmnID) and without (Name) its suffix: both are keys; a probe without genes is none
    assert read.genes == {"cg01_TC21": ["TP53"], "cg01": ["TP53"], "cg03_TC11": ["EGFR", "ERBB2"],
                          "cg03": ["EGFR", "ERBB2"]}  # fmt: skip
    assert not any(k.startswith(("[", "2")) for k in read.genes)  # nothing of the [Controls] section
    assert "'IlmnID' and 'Name'" in read.note and "'UCSC_RefGene_Name'" in read.note and "line 6" in read.note


def test_geo_platform_tables_and_xena_probe_maps_are_read_as_published(tmp_path: Path) -> None:
    geo = tmp_path / "GPL13534.txt"
    geo.write_text(
        "#ID = Illumina probe id\n#UCSC_RefGene_Name = gene names\n"
        "ID\tName\tIlmnID\tCHR\tUCSC_RefGene_Name\n"
        "cg01\tcg01\tcg01\t17\tTP53;TP53\ncg02\tcg02\tcg02\t7\t\n"
    )
    assert read_feature_map(geo, "map").genes == {"cg01": ["TP53"]}
    xena = tmp_path / "probeMap.tsv"
    xena.write_text("#id\tgene\tchrom\tchromStart\nCG01\tTP53,WRAP53\tchr17\t1\ncg02\t.\tchr7\t2\n")
    assert read_feature_map(xena, "map").genes == {"CG01": ["TP53", "WRAP53"]}
    plain = tmp_path / "mine.csv"  # names it does not know: the first two columns, as before
    plain.write_text("cpg,sym,other\ncg09,MYC,x\n")
    assert read_feature_map(plain, "map").genes == {"cg09": ["MYC"]}
    assert split_genes("DDR1 /// MIR4640") == ["DDR1", "MIR4640"] and split_genes("---") == []
    with pytest.raises(InputError, match="needs a feature id column and a gene symbol column"):
        (tmp_path / "one.csv").write_text("cg01\ncg02\n")
        read_feature_map(tmp_path / "one.csv", "map")


def _firehose(path: Path, quantities: list[str], rows: list[list[object]], samples: list[str]) -> Path:
    """A Firehose Level 3 table: each sample id over len(quantities) columns, the quantities in a second row."""
    header = ["Hybridization REF", *[s for s in samples for _ in quantities]]
    second = ["Composite Element REF", *(quantities * len(samples))]
    lines = ["\t".join(header), "\t".join(second), *("\t".join(map(str, row)) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


SAMPLES = ["TCGA-A3-3306-01A-01D-0860-05", "TCGA-A3-3307-01A-01D-0860-05", "TCGA-A3-3308-11A-01D-0860-05"]


def _methylation(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    beta = rng.uniform(size=(4, len(SAMPLES))).round(4)
    probes = [("cg00000029", "RBL2", 16, 53468112), ("cg00000108", "C3orf35", 3, 37459206),
              ("cg00000165", "", 1, 91194674), ("cg00000236", "VDAC3;VDAC3", 8, 42263294)]  # fmt: skip
    rows = [[probe, *[v for s in range(len(SAMPLES)) for v in (beta[i, s], gene, chrom, pos)]]
            for i, (probe, gene, chrom, pos) in enumerate(probes)]  # fmt: skip
    quantities = ["Beta_value", "Gene_Symbol", "Chromosome", "Genomic_Coordinate"]
    return _firehose(tmp_path / "meth.txt", quantities, rows, SAMPLES), beta


def _spec(tmp_path: Path, **layer: object) -> DatasetSpec:
    base = {"name": "meth", "kind": "methylation", "path": "meth.txt", "orientation": "genes_x_samples"}
    return DatasetSpec(name="fh", base_dir=tmp_path, genomics={"patient_id_length": 12, "layers": [base | layer]})


def test_a_firehose_methylation_table_gives_one_beta_per_sample_and_its_own_probe_map(tmp_path: Path) -> None:
    _, beta = _methylation(tmp_path)
    tables = read_genomics(_spec(tmp_path, features="probe"))
    matrix, samples = tables["expression"], tables["samples"]
    assert (samples["status"] == "ok").all() and len(samples) == 3  # no sample skipped for its repeated id
    assert list(matrix.index) == [s[:12] for s in SAMPLES]
    # the Beta_value columns, averaged per gene through the table's Gene_Symbol column; the probe without a gene kept
    assert set(matrix.columns) == {"meth:RBL2", "meth:C3orf35", "meth:VDAC3", "meth:cg00000165"}
    np.testing.assert_allclose(matrix["meth:RBL2"], beta[0])
    np.testing.assert_allclose(matrix["meth:cg00000165"], beta[2])
    np.testing.assert_allclose(matrix["meth:VDAC3"], beta[3])
    counts = gene_counts(tables)["expression"]
    assert counts["meth_mapped"] == 3 and counts["meth_unmapped"] == 1
    issues = "\n".join(genomics_issues(tables))
    assert "read 'Beta_value'" in issues and "'Gene_Symbol' column names each row's genes" in issues
    # a feature map, when given, is what maps the probes
    (tmp_path / "map.csv").write_text("probe,gene\ncg00000029,TP53\n")
    mapped = read_genomics(_spec(tmp_path, features="probe", feature_map="map.csv"))["expression"]
    np.testing.assert_allclose(mapped["meth:TP53"], beta[0])
    assert "meth:RBL2" not in mapped.columns and "meth:cg00000108" in mapped.columns


def test_a_quantity_is_chosen_by_name_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    quantities = ["read_count", "reads_per_million_miRNA_mapped", "cross-mapped"]
    rows = [["hsa-let-7a-1", 5234, 10321.2, "N", 10, 20.5, "N", 7, 14.0, "Y"],
            ["hsa-mir-21", 300, 600.0, "N", 30, 61.0, "N", 70, 141.0, "N"]]  # fmt: skip
    _firehose(tmp_path / "mir.txt", quantities, rows, SAMPLES)
    layer = {"name": "mirna", "kind": "mirna", "path": "mir.txt", "features": "mirna", "unit": "counts"}
    rpm = read_genomics(_spec(tmp_path, **layer))["expression"]  # reads per million, when not told otherwise
    np.testing.assert_allclose(rpm["mirna:hsa-mir-21"], [600.0, 61.0, 141.0])
    counts = read_genomics(_spec(tmp_path, **layer, quantity="read_count"))["expression"]
    np.testing.assert_allclose(counts["mirna:hsa-let-7a-1"], [5234, 10, 7])
    with pytest.raises(InputError, match=r"genomics.layers\[0\].quantity 'rpkm' is not in the second header row"):
        read_genomics(_spec(tmp_path, **layer, quantity="rpkm"))


def test_a_probe_layer_without_any_map_is_refused_naming_the_setting(tmp_path: Path) -> None:
    (tmp_path / "meth.txt").write_text("probe\tS1\tS2\ncg01\t0.1\t0.2\ncg02\t0.3\t0.4\n")
    with pytest.raises(InputError, match=r"genomics.layers\[0\] has features: probe but no feature_map"):
        read_genomics(_spec(tmp_path, features="probe"))


def test_duplicated_sample_ids_over_numbers_are_still_repeats_not_a_second_header(tmp_path: Path) -> None:
    (tmp_path / "meth.txt").write_text("probe\tS1\tS1\tS2\ncg01\t0.1\t0.9\t0.2\ncg02\t0.3\t0.8\t0.4\n")
    tables = read_genomics(DatasetSpec(name="d", base_dir=tmp_path, genomics={"layers": [
        {"name": "meth", "kind": "methylation", "path": "meth.txt", "orientation": "genes_x_samples"}]}))  # fmt: skip
    samples = tables["samples"]
    assert list(samples["status"]) == ["ok", "skipped", "ok"]
    assert "repeats column 2" in samples["reason"].iloc[1]
    pd.testing.assert_series_equal(
        tables["expression"]["meth:cg01"],
        pd.Series([0.1, 0.2], index=pd.Index(["S1", "S2"], name="patient_id")),
        check_names=False,
    )
