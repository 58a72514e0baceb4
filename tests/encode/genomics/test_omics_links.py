"""Omics links only to graph genes: the feature -> gene rules, the link budget and the link counts."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from clinicmm.config import EncodersSpec
from clinicmm.encode.featurizer import Featurizer
from clinicmm.encode.genomics import GenomicsPreprocessor, feature_gene, feature_layer, link_gene
from clinicmm.keys import Node
from clinicmm.knowledge.graph import KnowledgeGraph

TRAIN = [f"P{i}" for i in range(8)]
BASE = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # mean 0.5, std 0.5 on the train rows


@pytest.mark.parametrize(
    ("name", "gene"),
    [
        ("TP53", "TP53"),
        (" TP53 ", "TP53"),
        ("meth_TP53", "TP53"),
        ("METH_tp53", "tp53"),  # the prefix in any case; the symbol as written (the graph is case-sensitive)
        ("meth_MIR21", "MIR21"),
        ("hsa-mir-21", "MIR21"),
        ("hsa-miR-21-5p", "MIR21"),
        ("hsa-miR-21-3p", "MIR21"),
        ("hsa-miR-17*", "MIR17"),
        ("mir-155", "MIR155"),
        ("MIR-21", "MIR21"),
        ("hsa-let-7a-1", "MIRLET7A1"),
        ("hsa-let-7i", "MIRLET7I"),
        ("hsa-mir-181a-1", "MIR181A1"),
        ("hsa-mir-10a", "MIR10A"),
        ("hsa-mir-1-2", "MIR1-2"),  # no letter: the copy number after a hyphen, as HGNC writes it
        ("hsa-mir-548aa-1", "MIR548AA1"),
        ("hsa-miR-181a-5p", "MIR181A"),  # mature, made by MIR181A1 and MIR181A2: a symbol HGNC does not have
        ("MIR21", "MIR21"),  # ingest harmonisation already gave the HGNC symbol
        ("meth_", None),
        ("hsa-mir-103-2-as", None),  # miRNA-like but not read by the rules: no guess
        ("hsa-xyz-1", None),
        ("", None),
    ],
)
def test_feature_gene_rules(name: str, gene: str | None) -> None:
    assert feature_gene(name) == gene


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("TP53", "plain"),
        ("MIR17HG", "plain"),  # a miRNA host gene is an ordinary gene
        ("meth_TP53", "meth"),
        ("meth_MIR21", "meth"),
        ("hsa-mir-21", "mirna"),
        ("hsa-let-7a-1", "mirna"),
        ("MIR21", "mirna"),
        ("MIR1-2", "mirna"),
        ("MIRLET7A1", "mirna"),
        ("hsa-mir-103-2-as", "mirna"),
    ],
)
def test_feature_layer(name: str, layer: str) -> None:
    assert feature_layer(name) == layer


@pytest.mark.parametrize(
    ("name", "harmonize", "expected"),
    [
        ("TP53", False, ("TP53", "linked")),
        ("meth_TP53", False, ("TP53", "linked")),
        ("hsa-mir-21", False, ("MIR21", "linked")),
        ("BRCA2", False, (None, "not_in_graph")),  # an HGNC gene the graph lacks
        ("hsa-mir-155", False, (None, "not_in_graph")),
        ("NOTAGENE1", False, (None, "unmapped")),
        ("meth_NOTAGENE1", False, (None, "unmapped")),
        ("hsa-miR-181a-5p", True, (None, "unmapped")),  # MIR181A is no gene
        ("hsa-miR-1-3p", True, (None, "unmapped")),  # HGNC lists MIR1 as an alias of FSD1: a miRNA never links there
        ("C10orf10", True, ("DEPP1", "linked")),  # previous symbol -> current one, with harmonize
        ("meth_C10orf10", True, ("DEPP1", "linked")),
        ("C10orf10", False, (None, "not_in_graph")),  # a gene, but not under the graph's name
        ("hsa-mir-103-1", True, ("MIR103A1", "linked")),  # renamed miRNA: HGNC lists the old precursor name
        ("hsa-mir-103-1", False, (None, "not_in_graph")),
    ],
)
def test_link_gene(name: str, harmonize: bool, expected: tuple) -> None:
    graph = {"TP53", "MYC", "MIR21", "DEPP1", "MIR103A1", "FSD1"}
    assert link_gene(name, graph, harmonize) == expected


def test_mir_genes_are_graph_genes_of_the_shipped_graph() -> None:
    genes = set(KnowledgeGraph.default().names(Node.GENE))
    assert {"MIR17", "MIR200C", "MIR24-1"} <= genes
    assert link_gene("hsa-mir-17", genes) == ("MIR17", "linked")
    assert link_gene("hsa-miR-24-1-5p", genes) == ("MIR24-1", "linked")


def _table(strong: dict[str, float], quiet: list[str]) -> pd.DataFrame:
    """Train rows vary as BASE in every column; test patient T has z = ``strong[c]`` in those columns, 0 elsewhere."""
    columns = list(strong) + quiet
    train = pd.DataFrame({c: BASE for c in columns}, index=TRAIN)
    test = pd.DataFrame([[0.5 + 0.5 * strong.get(c, 0.0) for c in columns]], columns=columns, index=["T"])
    return pd.concat([train, test])


def test_non_graph_features_do_not_use_up_the_link_budget() -> None:
    strong = {  # largest first: five non-graph columns, then graph genes
        "meth_NOTAGENE1": 9.0, "hsa-mir-155": -8.5, "BRCA2": 8.0, "FLJ35390": 7.5, "meth_BRCA2": 7.0,
        "MYC": 6.0, "meth_TP53": -5.0, "hsa-mir-21": 4.0, "TP53": 3.5, "EGFR": 3.0, "KRAS": 1.0,
    }  # fmt: skip
    matrix = _table(strong, ["GAPDH"])
    pre = GenomicsPreprocessor("log", z_threshold=2.0, max_genes=3).fit(matrix, None, TRAIN)
    graph = {"MYC", "TP53", "MIR21", "EGFR", "KRAS", "GAPDH"}
    # before: the five strongest names fill the budget and none is a graph gene
    assert pre.evidence(matrix, None, ["T"]) == {"T": ["meth_NOTAGENE1", "hsa-mir-155", "BRCA2"]}
    # now: the three strongest graph genes; meth_TP53 stands for TP53, which is then not linked twice
    assert pre.evidence(matrix, None, ["T"], graph) == {"T": ["MYC", "TP53", "MIR21"]}
    wide = GenomicsPreprocessor("log", z_threshold=2.0, max_genes=10).fit(matrix, None, TRAIN)
    # below the threshold (KRAS, GAPDH) never links; each gene once although TP53 has two strong features
    assert wide.evidence(matrix, None, ["T"], graph) == {"T": ["MYC", "TP53", "MIR21", "EGFR"]}
    quiet = {"T": []} | {p: [] for p in TRAIN[:2]}
    assert wide.evidence(matrix.assign(**dict.fromkeys(strong, 0.5)), None, ["T", "P0", "P1"], graph) == quiet


def test_mutated_genes_are_graph_genes_and_count_apart_from_the_budget() -> None:
    matrix = _table({"BRCA2": 9.0, "MYC": 6.0, "EGFR": 5.0}, [])
    mutations = pd.DataFrame(
        [("T", "TP53", True), ("T", "NOTAGENE1", True), ("T", "MYC", True), ("T", "C10orf10", True)],
        columns=["patient_id", "gene", "non_silent"],
    )
    pre = GenomicsPreprocessor("log", max_genes=1, harmonize=True).fit(matrix, None, TRAIN)
    graph = {"TP53", "MYC", "EGFR", "DEPP1"}
    # mutations: every graph gene (C10orf10 under its current symbol, NOTAGENE1 left out); then the top changed one
    assert pre.evidence(matrix, mutations, ["T"], graph) == {"T": ["DEPP1", "MYC", "TP53"]}


def _small_kg(tmp_path) -> KnowledgeGraph:
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("PW_A\tR-1\tTP53\tMYC\tMIR21\nPW_B\tR-2\tEGFR\tDEPP1\n")
    kg = KnowledgeGraph()
    kg.add_gmt(gmt)
    return kg


def test_featurizer_counts_linked_not_in_graph_and_unmapped_features(tmp_path, caplog) -> None:
    strong = {
        "TP53": 3.0,  # plain, linked
        "C10orf10": 2.5,  # plain, linked as DEPP1 (harmonize)
        "BRCA2": 9.0,  # plain, gene not in the graph
        "NOTAGENE1": 8.0,  # plain, no gene
        "meth_MYC": 4.0,  # meth, linked
        "meth_KRAS": 7.0,  # meth, not in the graph
        "meth_NOTAGENE2": 7.5,  # meth, no gene
        "hsa-mir-21": -5.0,  # mirna, linked
        "MIR155": 6.0,  # mirna (ingest gave the HGNC symbol), not in the graph
        "hsa-miR-1-3p": 6.5,  # mirna, no gene
        "hsa-mir-103-2-as": 8.5,  # mirna, no gene (not read by the rules)
    }
    matrix = _table(strong, ["EGFR"])  # EGFR: plain, linked, never strongly changed
    pre = GenomicsPreprocessor("log", z_threshold=2.0, max_genes=25, harmonize=True).fit(matrix, None, TRAIN)
    patients = ["T", "P0", "P1"]
    present = np.array([True, True, False])
    with caplog.at_level(logging.INFO, logger="clinicmm"):
        _, links, info = Featurizer(EncodersSpec(), _small_kg(tmp_path), pre).omics(patients, matrix, None, present)
    assert links == [["DEPP1", "MIR21", "MYC", "TP53"], [], []]
    assert info["stats"] == {
        "encoded": 0, "cached": 0, "failed": 0, "computed": 2,
        "features": 12, "features_linked": 5, "features_not_in_graph": 3, "features_unmapped": 4,
        "features_linked_plain": 3, "features_not_in_graph_plain": 1, "features_unmapped_plain": 1,
        "features_linked_meth": 1, "features_not_in_graph_meth": 1, "features_unmapped_meth": 1,
        "features_linked_mirna": 1, "features_not_in_graph_mirna": 1, "features_unmapped_mirna": 2,
        "gene_links": 4, "patients_without_gene_links": 1,  # P0: omics but nothing strongly changed; P1: no omics
    }  # fmt: skip
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("omics:"))
    assert "5 of 12 features link" in line and "1 of 2 patients have no gene link" in line
    assert "chromosome arm" not in line  # said only when a features: cytoband layer has such columns
    assert not any(p in r.getMessage() for r in caplog.records for p in patients)  # no patient id in the log


def test_round_trip_keeps_the_links_and_an_old_dict_still_loads(tmp_path) -> None:
    matrix = _table({"meth_NOTAGENE1": 9.0, "C10orf10": 5.0, "hsa-mir-21": 4.0, "TP53": 3.0}, ["MYC"])
    mutations = pd.DataFrame([("T", "EGFR", True), ("P0", "EGFR", True)], columns=["patient_id", "gene", "non_silent"])
    pre = GenomicsPreprocessor("log", max_genes=2, min_mutated=1, harmonize=True).fit(matrix, mutations, TRAIN)
    graph = set(_small_kg(tmp_path).names(Node.GENE))
    again = GenomicsPreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again.to_dict() == pre.to_dict()
    expected = {"T": ["EGFR", "DEPP1", "MIR21"]}
    assert pre.evidence(matrix, mutations, ["T"], graph) == again.evidence(matrix, mutations, ["T"], graph) == expected
    assert again.link_counts(graph) == pre.link_counts(graph)
    # a dict written before harmonize / max_features / mutation_classes existed: no HGNC renaming, so C10orf10
    # (the graph says DEPP1) does not link and the budget goes to the next graph gene
    old = {k: v for k, v in pre.to_dict().items() if k not in ("harmonize", "max_features", "mutation_classes")}
    loaded = GenomicsPreprocessor.from_dict(old)
    assert loaded.harmonize is False
    assert loaded.evidence(matrix, mutations, ["T"], graph) == {"T": ["EGFR", "MIR21", "TP53"]}
    assert loaded.link_counts(graph)["features_not_in_graph"] == 1  # C10orf10: a gene, not under the graph's name


@pytest.mark.parametrize(
    ("name", "gene"),
    [
        ("Akt_pS473", "AKT1"),  # the graph below knows AKT1 only; HGNC lists AKT as its alias
        ("Akt_pS473-R-V", "AKT1"),  # MD Anderson's level-3 files: the validation code after the antibody
        ("rppa:4E-BP1_pT37_T46", "EIF4EBP1"),
        ("Bcl-2", "BCL2"),
        ("c-Myc", "MYC"),
        ("HER2_pY1248-R-V", "ERBB2"),
        ("ER-alpha_pS118", "ESR1"),
        ("Rb_pS807_S811", "RB1"),
        ("p53", "TP53"),  # a protein mass, as written
        ("p27_pT157", None),  # upper-cased it would be IFI27's alias P27: left unlinked
        ("EGFR_pY1068-R-C", "EGFR"),
        ("hsa-mir-999", None),  # a miRNA-like name is never read as an antibody
    ],
)
def test_an_rppa_antibody_links_through_its_protein_part(name: str, gene: str | None) -> None:
    graph = {"AKT1", "EIF4EBP1", "BCL2", "MYC", "ERBB2", "ESR1", "RB1", "TP53", "CDKN1B", "IFI27", "EGFR"}
    assert link_gene(name, graph, harmonize=True)[0] == gene


def test_antibody_spellings_drop_sites_and_validation_codes_and_never_upper_case_a_protein_mass() -> None:
    from clinicmm.encode.genomics import antibody_spellings

    assert antibody_spellings("4E-BP1_pT37_T46-R-V") == ["4E-BP1", "4EBP1"]
    assert antibody_spellings("Cyclin_B1") == ["Cyclin_B1", "CYCLIN_B1", "CYCLINB1"]
    assert antibody_spellings("p27_pT198") == ["p27"]
    assert antibody_spellings("Caspase-7_cleavedD198-M-C") == ["Caspase-7", "Caspase7", "CASPASE-7", "CASPASE7"]
