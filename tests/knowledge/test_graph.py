"""Tests of clinicmm.knowledge.graph and loaders: shipped data, loaders and their errors, export, round trip."""

from __future__ import annotations

import pytest
import torch

from clinicmm.demo.design import CANCER_TYPES, PROGRAMMES, SITES, programme_genes
from clinicmm.errors import InputError
from clinicmm.keys import KNOWLEDGE_NODES, Node, Rel
from clinicmm.knowledge.graph import KnowledgeGraph
from clinicmm.knowledge.loaders import read_concepts, read_gmt, read_triples


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return KnowledgeGraph.default()


def _edge_set(kg: KnowledgeGraph, src: Node, rel: Rel, dst: Node) -> set[tuple[str, str]]:
    return {(s, d) for s, d, _ in kg.edges(src, rel, dst)}


# ------------------------------------------------------------------------------------------ shipped graph
def test_default_has_demo_nodes(kg):
    for code in ("LUAD", "LUSC", "STAD", "KIRP", "HNSC", "THCA", "BRCA", "COAD", "PRAD", "KIRC", "SKCM", "GBM"):
        assert kg.index(Node.CANCER, code) is not None, code
    assert kg.title(Node.CANCER, "LUAD") == "Lung Adenocarcinoma"
    assert kg.definition(Node.CANCER, "THCA").endswith(".")
    assert all(kg.index(Node.GENE, g) is not None for g in programme_genes())
    assert kg.num_nodes(Node.PATHWAY) == 341
    assert kg.num_nodes(Node.GENE) >= 3509
    ids = {c.id for c in kg.concepts()}
    for ct in CANCER_TYPES:
        assert f"histology:{ct.histology}" in ids
        assert f"bodypart:{ct.site}" in ids
    assert {"biomarker:ttf1", "biomarker:p40", "biomarker:napsina", "site:lung", "site:oral cavity"} <= ids


def test_default_programme_genes_point_at_their_two_types(kg):
    drivers = _edge_set(kg, Node.GENE, Rel.DRIVER_OF, Node.CANCER)
    for key, programme in PROGRAMMES.items():
        types = [ct.code for ct in CANCER_TYPES if ct.programme == key]
        assert len(types) == 2
        for gene in (*programme.up_genes, *programme.mutated_genes):
            for code in types:
                assert (gene, code) in drivers, (gene, code)
    assert {("EGFR", "LUAD"), ("KEAP1", "LUSC"), ("FH", "KIRP"), ("CCND1", "HNSC"), ("BRAF", "THCA")} <= drivers
    labels = {label for _, _, label in kg.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER)}
    assert labels == {"TCGA marker papers", "clinicmm demo programme"}


def test_default_concepts_indicate_the_design_types(kg):
    indicates = _edge_set(kg, Node.CONCEPT, Rel.INDICATES, Node.CANCER)
    for ct in CANCER_TYPES:
        assert (f"bodypart:{ct.site}", ct.code) in indicates
        assert (f"histology:{ct.histology}", ct.code) in indicates
    # chest names the two lung types only among the demo's types
    demo = {ct.code for ct in CANCER_TYPES}
    assert {d for s, d in indicates if s == "bodypart:chest"} & demo == {"LUAD", "LUSC"}
    assert ("biomarker:ttf1", "LUAD") in indicates and ("biomarker:p40", "LUSC") in indicates
    for gene, _ in _edge_set(kg, Node.GENE, Rel.DRIVER_OF, Node.CANCER):
        assert kg.index(Node.GENE, gene) is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("CHEST", "bodypart:chest"), ("THORAX", "bodypart:chest"), ("LUNG", "bodypart:chest"),
     ("ABDOMEN", "bodypart:abdomen"), ("KIDNEY", "bodypart:abdomen"), ("stomach", "bodypart:abdomen"),
     ("NECK", "bodypart:neck"), ("THYROID", "bodypart:neck"), ("LARYNX", "bodypart:neck"),
     ("HEAD_NECK", "bodypart:neck"), (" chest ", "bodypart:chest"), ("KNEE", None), ("", None), (None, None)],
)
def test_concept_for_body_part(kg, value, expected):
    assert kg.concept_for_body_part(value) == expected


def test_design_body_parts_map_to_their_site_concept(kg):
    for site in SITES.values():
        assert kg.concept_for_body_part(site.body_part) == f"bodypart:{site.name}"


# ------------------------------------------------------------------------------------------ export
def test_to_hetero_validates_with_both_directions(kg):
    data = kg.to_hetero()
    assert set(data.node_types) == {t.value for t in KNOWLEDGE_NODES}
    for t in KNOWLEDGE_NODES:
        assert data[t.value].num_nodes == kg.num_nodes(t)
        assert torch.equal(data[t.value].node_id, torch.arange(kg.num_nodes(t)))
    fwd = data["gene", "driver_of", "cancer_type"].edge_index
    rev = data["cancer_type", "rev_driver_of", "gene"].edge_index
    assert fwd.dtype == torch.long and fwd.shape[0] == 2
    assert torch.equal(rev, fwd.flip(0))
    assert fwd.shape[1] == len(kg.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER))
    assert len(set(map(tuple, fwd.t().tolist()))) == fwd.shape[1]  # deduplicated
    egfr, luad = kg.index(Node.GENE, "EGFR"), kg.index(Node.CANCER, "LUAD")
    assert [egfr, luad] in fwd.t().tolist()
    assert data["pathway", "rev_member_of", "gene"].edge_index.shape[1] == kg.summary().query(
        "name == 'gene member_of pathway'")["count"].item()


def test_to_hetero_of_small_graph_keeps_empty_relations():
    kg = KnowledgeGraph()
    kg.add_edge("gene", "TP53", "driver_of", "cancer_type", "LUAD", "test")
    kg.add_edge("gene", "TP53", "driver_of", "cancer_type", "LUAD", "again")  # duplicate is ignored
    data = kg.to_hetero()
    assert data["gene", "driver_of", "cancer_type"].edge_index.tolist() == [[0], [0]]
    assert data["concept", "indicates", "cancer_type"].edge_index.shape == (2, 0)
    assert data["pathway"].num_nodes == 0


def test_summary_counts(kg):
    summary = kg.summary()
    assert list(summary.columns) == ["section", "name", "count"]
    nodes = summary[summary.section == "nodes"].set_index("name")["count"]
    assert nodes["cancer_type"] == kg.num_nodes(Node.CANCER)
    relations = summary[summary.section == "relation"]["count"].sum()
    sources = summary[summary.section == "source"].set_index("name")["count"]
    assert relations == sources.sum()
    assert sources["Reactome"] == len(kg.edges(Node.GENE, Rel.MEMBER_OF, Node.PATHWAY))


# ------------------------------------------------------------------------------------------ loaders
def test_add_gmt_counts_new_edges(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("# comment\nSET_A\tdesc a\tTP53\tKRAS\tTP53\n\nSET_B\thttp://x\tKRAS\tEGFR\n")
    kg = KnowledgeGraph()
    assert kg.add_gmt(path) == 4
    assert kg.names(Node.PATHWAY) == ["SET_A", "SET_B"]
    assert kg.names(Node.GENE) == ["TP53", "KRAS", "EGFR"]
    assert kg.add_gmt(path) == 0  # nothing new the second time
    assert {label for _, _, label in kg.edges(Node.GENE, Rel.MEMBER_OF, Node.PATHWAY)} == {"sets.gmt"}


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [("SET_A\tdesc\tTP53\nSET_B\tdesc\n", 2, "at least one gene"),
     ("SET_A\tdesc\tTP53\n\n# c\n\tdesc\tKRAS\n", 4, "GMT line"),
     ("SET_A\n", 1, "1 field")],
)
def test_bad_gmt_names_file_and_line(tmp_path, content, line, needle):
    path = tmp_path / "bad.gmt"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_gmt(path)
    assert f"bad.gmt, line {line}" in str(err.value) and needle in str(err.value)


def test_add_triples_both_forms(tmp_path):
    full = tmp_path / "full.tsv"
    full.write_text("src_type\tsrc\trelation\tdst_type\tdst\tsource\n"
                    "gene\tMYGENE\tdriver_of\tcancer_type\tNEWTYPE\tmy lab\n"
                    "concept\tsite:pancreas\tindicates\tcancer_type\tNEWTYPE\t\n")
    short = tmp_path / "short.tsv"
    short.write_text("head\trelation\ttail\n# typed ids\ngene:MYGENE\tmember_of\tpathway:My set\n"
                     "concept:site:pancreas\tindicates\tcancer_type:PAAD\tpapers\n")
    kg = KnowledgeGraph()
    assert kg.add_triples(full) == 2
    assert kg.add_triples(short) == 2
    assert kg.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER) == [("MYGENE", "NEWTYPE", "my lab")]
    assert kg.edges(Node.CONCEPT, Rel.INDICATES, Node.CANCER) == [
        ("site:pancreas", "NEWTYPE", "full.tsv"), ("site:pancreas", "PAAD", "papers")]
    assert kg.edges(Node.GENE, Rel.MEMBER_OF, Node.PATHWAY) == [("MYGENE", "My set", "short.tsv")]
    assert kg.concepts()[0].id == "site:pancreas" and kg.concepts()[0].kind == "site"


FULL_HEADER = "src_type\tsrc\trelation\tdst_type\tdst\tsource\ngene\tKRAS\tdriver_of\tcancer_type\tLUAD\tx\n"
SHORT_HEADER = "head\trelation\ttail\ngene:KRAS\tdriver_of\tcancer_type:LUAD\n"
NO_HEADER = "gene:KRAS\tdriver_of\tcancer_type:LUAD\n"


@pytest.mark.parametrize(
    ("head", "row", "needle", "line"),
    [(FULL_HEADER, "gene\tTP53\tdrives\tcancer_type\tLUAD\tx",
      "unknown relation 'drives'; valid relations: gene member_of pathway", 3),
     (FULL_HEADER, "protein\tTP53\tdriver_of\tcancer_type\tLUAD\tx",
      "unknown node type 'protein'; valid node types: gene", 3),
     (FULL_HEADER, "concept\tsite:lung\tdriver_of\tcancer_type\tLUAD\tx", "cannot link concept to cancer_type", 3),
     (FULL_HEADER, "gene\tTP53\tdriver_of\tcancer_type", "expected 6 tab-separated fields", 3),
     (FULL_HEADER, "gene\t\tdriver_of\tcancer_type\tLUAD\tx", "empty node name", 3),
     (SHORT_HEADER, "TP53\tdriver_of\tcancer_type:LUAD", "typed id like gene:TP53", 3),
     (SHORT_HEADER, "patient:P1\tdriver_of\tcancer_type:LUAD", "unknown node type 'patient'", 3),
     (NO_HEADER, "gene\tTP53\tdriver_of\tcancer_type\tLUAD\tx", "expected 3 tab-separated fields", 2)],
)
def test_bad_triples_name_file_and_line(tmp_path, head, row, needle, line):
    path = tmp_path / "bad.tsv"
    path.write_text(f"{head}{row}\n")
    with pytest.raises(InputError) as err:
        read_triples(path)
    assert f"bad.tsv, line {line}:" in str(err.value)
    assert needle in str(err.value)


def test_triples_without_header(tmp_path):
    path = tmp_path / "plain.tsv"
    path.write_text(NO_HEADER + "gene:TP53\tdriver_of\tcancer_type:LUSC\tpaper\n")
    triples = read_triples(path)
    assert [(t.src, t.dst, t.source) for t in triples] == [("KRAS", "LUAD", "plain.tsv"), ("TP53", "LUSC", "paper")]


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        KnowledgeGraph().add_triples(tmp_path / "nope.tsv")


def test_bad_concepts_file(tmp_path):
    path = tmp_path / "concepts.tsv"
    path.write_text("concept_id\tname\tkind\tsynonyms\nsite:lung\tlung\tsite\tpulmonary\nsite:x\tx\torgan\t\n")
    with pytest.raises(InputError, match=r"concepts.tsv, line 3: unknown concept kind 'organ'"):
        read_concepts(path)
    path.write_text("concept_id\tname\tkind\nsite:lung\tlung\tsite\n")
    with pytest.raises(InputError, match="expected a tab-separated header"):
        read_concepts(path)


def test_ensure_nodes_adds_only_missing(kg):
    small = KnowledgeGraph()
    small.ensure_nodes(Node.CANCER, ["LUAD", "LUSC"])
    small.ensure_nodes("cancer_type", ["LUSC", "MYTYPE"])
    assert small.names(Node.CANCER) == ["LUAD", "LUSC", "MYTYPE"]
    assert small.index(Node.CANCER, "MYTYPE") == 2
    assert small.index(Node.CANCER, "OTHER") is None
    with pytest.raises(InputError, match="unknown node type 'patient'"):
        small.ensure_nodes("patient", ["P1"])


# ------------------------------------------------------------------------------------------ identity
def test_fingerprint_stable_and_sensitive(kg):
    again = KnowledgeGraph.default()
    assert kg.fingerprint() == again.fingerprint()
    assert len(kg.fingerprint()) == 64
    again.add_edge(Node.GENE, "TP53", Rel.DRIVER_OF, Node.CANCER, "THCA", "test")
    assert again.fingerprint() != kg.fingerprint()
    other = KnowledgeGraph.default()
    other.ensure_nodes(Node.CANCER, ["NEWTYPE"])
    assert other.fingerprint() != kg.fingerprint()


def test_files_round_trip(kg, tmp_path):
    kg.to_files(tmp_path / "graph")
    assert sorted(p.name for p in (tmp_path / "graph").iterdir()) == ["concepts.tsv", "edges.tsv", "nodes.tsv"]
    back = KnowledgeGraph.from_files(tmp_path / "graph")
    assert back.fingerprint() == kg.fingerprint()
    for t in KNOWLEDGE_NODES:
        assert back.names(t) == kg.names(t)  # same indices, so a trained model's node ids still line up
    assert back.concepts() == kg.concepts()
    assert back.title(Node.CANCER, "KIRP") == kg.title(Node.CANCER, "KIRP")
    assert back.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER) == kg.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER)


def test_from_files_names_missing_files(tmp_path):
    (tmp_path / "nodes.tsv").write_text("node_type\tname\ttitle\tdefinition\n")
    with pytest.raises(InputError, match="missing edges.tsv, concepts.tsv"):
        KnowledgeGraph.from_files(tmp_path)
