"""``genomics.layers``: any number of named omics tables, each read with its own unit and id kind, joined to the
expression columns as ``<layer>:<feature>``; probes averaged per gene through a feature map, unmapped ones kept
and counted; the encoder logs only the counts-like layers and links each layer's features to graph genes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from clinicmm.config import DatasetSpec, GenomicsEncoderSpec, GenomicsSpec
from clinicmm.encode.genomics import GenomicsPreprocessor, feature_gene, feature_layer, link_gene
from clinicmm.ingest.genomics import gene_counts, genomics_issues, read_genomics


def _cohort(tmp_path: Path) -> DatasetSpec:
    (tmp_path / "expr.csv").write_text("sample_id,TP53,EGFR\nP1,10,100\nP2,30,0\nP3,70,1\n")
    # two probes of TP53, one shared by EGFR and ERBB2 (listed twice, as manifests do), one unmapped
    (tmp_path / "meth.tsv").write_text(
        "sample_id\tcg01\tcg02\tcg03\tcg99\nP1\t0.2\t0.4\t0.9\t0.5\nP2\t0.6\t\t0.1\t0.5\nP4\t0.1\t0.3\t0.3\t0.2\n"
    )
    (tmp_path / "manifest.csv").write_text("IlmnID,UCSC_RefGene_Name\ncg01,TP53\ncg02,TP53;TP53\ncg03,EGFR;ERBB2\n")
    (tmp_path / "cnv.tsv").write_text("sample_id\tMYC\tCDKN2A\nP1\t0.5\t-1.2\nP2\t0.0\t0.1\nP3\t1.1\t0.0\n")
    return DatasetSpec(
        name="layers",
        base_dir=tmp_path,
        genomics={
            "expression": {"path": "expr.csv", "unit": "tpm"},
            "layers": [
                {"name": "methylation", "kind": "methylation", "path": "meth.tsv", "features": "probe",
                 "feature_map": "manifest.csv"},
                {"name": "cnv", "kind": "copy_number", "path": "cnv.tsv", "unit": "log"},
            ],
        },
    )  # fmt: skip


def test_layers_join_the_expression_columns_with_probes_averaged_per_gene(tmp_path: Path) -> None:
    tables = read_genomics(_cohort(tmp_path))
    matrix = tables["expression"]
    assert sorted(matrix.index) == ["P1", "P2", "P3", "P4"]  # P4 has methylation only, P3 no methylation
    assert set(matrix.columns) == {
        "TP53", "EGFR", "methylation:TP53", "methylation:EGFR", "methylation:ERBB2", "methylation:cg99",
        "cnv:MYC", "cnv:CDKN2A",
    }  # fmt: skip
    assert matrix.loc["P1", "methylation:TP53"] == pytest.approx(0.3)  # mean of cg01 and cg02
    assert matrix.loc["P2", "methylation:TP53"] == pytest.approx(0.6)  # cg02 missing: the probe it has
    assert matrix.loc["P1", "methylation:ERBB2"] == pytest.approx(0.9)  # a probe of two genes counts for both
    assert np.isnan(matrix.loc["P3", "methylation:TP53"]) and np.isnan(matrix.loc["P4", "TP53"])
    counts = gene_counts(tables)["expression"]
    assert counts["methylation_features"] == 4 and counts["methylation_mapped"] == 3
    assert counts["methylation_unmapped"] == 1 and counts["cnv_features"] == 2
    assert any("1 of 4 methylation features are not in manifest.csv" in line for line in genomics_issues(tables))
    sources = set(tables["samples"]["source"].map(lambda s: Path(s).name))
    assert sources == {"expr.csv", "meth.tsv", "cnv.tsv"}  # every sample of every table is accounted for


def test_only_counts_like_layers_are_logged_and_the_units_travel_with_the_model(tmp_path: Path) -> None:
    matrix = read_genomics(_cohort(tmp_path))["expression"]
    pre = GenomicsPreprocessor.from_spec("tpm", GenomicsEncoderSpec(), layer_units={"methylation": "normalized",
                                                                                      "cnv": "log"})  # fmt: skip
    pre.fit(matrix, None)
    z = pre.zscores(matrix, ["P1", "P2", "P3"])
    logged = np.log2(np.array([10, 30, 70]) + 1.0)
    expected = (logged - logged.mean()) / logged.std()
    np.testing.assert_allclose(z["TP53"], expected)  # tpm: log2(x + 1) then z
    cnv = matrix.loc[["P1", "P2", "P3"], "cnv:MYC"].to_numpy()
    np.testing.assert_allclose(z["cnv:MYC"], (cnv - cnv.mean()) / cnv.std())  # log ratios as given
    again = GenomicsPreprocessor.from_dict(pre.to_dict())
    pd.testing.assert_frame_equal(again.zscores(matrix, ["P1", "P2"]), pre.zscores(matrix, ["P1", "P2"]))


def test_layer_features_link_to_their_genes_and_are_counted_per_layer() -> None:
    graph = {"TP53", "EGFR", "MIR21", "MYC"}
    assert feature_gene("methylation:TP53") == "TP53" and feature_layer("methylation:TP53") == "methylation"
    assert feature_gene("mirna:hsa-mir-21") == "MIR21" and link_gene("mirna:hsa-miR-21-5p", graph)[0] == "MIR21"
    assert link_gene("methylation:cg99", graph)[1] == "unmapped"
    assert link_gene("cnv:MYC", graph) == ("MYC", "linked")
    pre = GenomicsPreprocessor("normalized", layer_units={"methylation": "normalized", "cnv": "log"})
    frame = pd.DataFrame(
        {"methylation:TP53": [0.1, 0.5], "methylation:cg99": [0.2, 0.9], "cnv:MYC": [0.0, 1.0], "EGFR": [1, 2]},
        index=["A", "B"],
    )
    counts = pre.fit(frame, None).link_counts(graph)
    assert counts["features_linked_methylation"] == 1 and counts["features_unmapped_methylation"] == 1
    assert counts["features_linked_cnv"] == 1 and counts["features_linked_plain"] == 1
    assert pre.evidence(frame, None, ["B"], graph)["B"] == []  # |z| = 1 each: below the threshold
    strong = GenomicsPreprocessor("normalized", z_threshold=0.5, layer_units={"cnv": "log", "methylation": "log"})
    assert set(strong.fit(frame, None).evidence(frame, None, ["B"], graph)["B"]) == {"TP53", "MYC", "EGFR"}


def test_layer_configs_are_checked() -> None:
    with pytest.raises(ValidationError, match="each layer needs its own name"):
        GenomicsSpec(
            layers=[{"name": "a", "kind": "other", "path": "a.tsv"}, {"name": "a", "kind": "other", "path": "b.tsv"}]
        )
    with pytest.raises(ValidationError, match="String should match pattern"):
        GenomicsSpec(layers=[{"name": "Bad Name", "kind": "other", "path": "a.tsv"}])
    assert GenomicsSpec(layers=[{"name": "rppa", "kind": "protein", "path": "p.csv"}]).expression is None


def test_a_protein_layer_keeps_each_antibody_and_each_links_to_its_gene(tmp_path: Path) -> None:
    """cBioPortal's RPPA table names each antibody ``GENE|antibody``; a gene's total protein and its phospho-forms
    are distinct measurements. Renamed to one HGNC symbol they collided and all but one were dropped as repeats."""
    (tmp_path / "rppa.txt").write_text(
        "Composite.Element.REF\tS1\tS2\tS3\n"
        "EIF4EBP1|4E-BP1\t0.1\t0.2\t0.3\nEIF4EBP1|4E-BP1_pS65\t1.1\t1.2\t1.3\nEGFR|EGFR_pY1068\t-1\t0\t1\n"
        "ACACA ACACB|ACC_pS79\t0.5\t0.4\t0.3\n"
    )
    spec = DatasetSpec(name="p", base_dir=tmp_path, genomics={"layers": [
        {"name": "rppa", "kind": "protein", "path": "rppa.txt", "orientation": "genes_x_samples"}]})  # fmt: skip
    matrix = read_genomics(spec)["expression"]
    assert list(matrix.columns) == ["rppa:EIF4EBP1|4E-BP1", "rppa:EIF4EBP1|4E-BP1_pS65", "rppa:EGFR|EGFR_pY1068",
                                    "rppa:ACACA ACACB|ACC_pS79"]  # fmt: skip
    np.testing.assert_allclose(matrix["rppa:EIF4EBP1|4E-BP1_pS65"], [1.1, 1.2, 1.3])
    graph = {"EIF4EBP1", "EGFR", "ACACA"}
    assert [link_gene(c, graph, harmonize=True)[0] for c in matrix.columns] == ["EIF4EBP1", "EIF4EBP1", "EGFR", None]
