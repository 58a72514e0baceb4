"""Tests of clinicmm.knowledge.graph and loaders: shipped data, loaders and their errors, export, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clinicmm.demo.design import CANCER_TYPES, SITES, programme_genes
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


def test_default_driver_edges_are_the_sourced_ones_only(kg):
    drivers = _edge_set(kg, Node.GENE, Rel.DRIVER_OF, Node.CANCER)
    assert {("EGFR", "LUAD"), ("KEAP1", "LUSC"), ("FH", "KIRP"), ("CCND1", "HNSC"), ("BRAF", "THCA")} <= drivers
    # the demo's invented programme links (tests/knowledge/test_shipped_sources.py) are not in the shipped graph
    assert ("NQO1", "KIRP") not in drivers and ("DUSP6", "THCA") not in drivers and ("SOX2", "KIRP") not in drivers
    labels = {label for _, _, label in kg.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER)}
    assert labels == {"TCGA marker papers"}


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
    [
        ("CHEST", "bodypart:chest"),
        ("THORAX", "bodypart:chest"),
        ("LUNG", "bodypart:chest"),
        ("ABDOMEN", "bodypart:abdomen"),
        ("KIDNEY", "bodypart:abdomen"),
        ("stomach", "bodypart:abdomen"),
        ("NECK", "bodypart:neck"),
        ("THYROID", "bodypart:neck"),
        ("LARYNX", "bodypart:neck"),
        ("HEAD_NECK", "bodypart:neck"),
        (" chest ", "bodypart:chest"),
        ("KNEE", None),
        ("", None),
        (None, None),
    ],
)
def test_concept_for_body_part(kg, value, expected):
    assert kg.concept_for_body_part(value) == expected


def test_dicom_body_parts_map_to_their_site_concept(kg):
    # the values scanners write in BodyPartExamined (0018,0015) for the demo's three sites
    for value, site in (("CHEST", "chest"), ("THORAX", "chest"), ("ABDOMEN", "abdomen"), ("NECK", "neck")):
        assert kg.concept_for_body_part(value) == f"bodypart:{site}"
    for site in SITES.values():
        assert kg.concept_for_body_part(site.name.upper()) == f"bodypart:{site.name}"


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
    assert (
        data["pathway", "rev_member_of", "gene"].edge_index.shape[1]
        == kg.summary().query("name == 'gene member_of pathway'")["count"].item()
    )


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
    [
        ("SET_A\tdesc\tTP53\nSET_B\tdesc\n", 2, "at least one gene"),
        ("SET_A\tdesc\tTP53\n\n# c\n\tdesc\tKRAS\n", 4, "GMT line"),
        ("SET_A\n", 1, "1 field"),
    ],
)
def test_bad_gmt_names_file_and_line(tmp_path, content, line, needle):
    path = tmp_path / "bad.gmt"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_gmt(path)
    assert f"bad.gmt, line {line}" in str(err.value) and needle in str(err.value)


def test_add_triples_both_forms(tmp_path):
    full = tmp_path / "full.tsv"
    full.write_text(
        "src_type\tsrc\trelation\tdst_type\tdst\tsource\n"
        "gene\tMYGENE\tdriver_of\tcancer_type\tNEWTYPE\tmy lab\n"
        "concept\tsite:pancreas\tindicates\tcancer_type\tNEWTYPE\t\n"
    )
    short = tmp_path / "short.tsv"
    short.write_text(
        "head\trelation\ttail\n# typed ids\ngene:MYGENE\tmember_of\tpathway:My set\n"
        "concept:site:pancreas\tindicates\tcancer_type:PAAD\tpapers\n"
    )
    kg = KnowledgeGraph()
    assert kg.add_triples(full) == 2
    assert kg.add_triples(short) == 2
    assert kg.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER) == [("MYGENE", "NEWTYPE", "my lab")]
    assert kg.edges(Node.CONCEPT, Rel.INDICATES, Node.CANCER) == [
        ("site:pancreas", "NEWTYPE", "full.tsv"),
        ("site:pancreas", "PAAD", "papers"),
    ]
    assert kg.edges(Node.GENE, Rel.MEMBER_OF, Node.PATHWAY) == [("MYGENE", "My set", "short.tsv")]
    assert kg.concepts()[0].id == "site:pancreas" and kg.concepts()[0].kind == "site"


FULL_HEADER = "src_type\tsrc\trelation\tdst_type\tdst\tsource\ngene\tKRAS\tdriver_of\tcancer_type\tLUAD\tx\n"
SHORT_HEADER = "head\trelation\ttail\ngene:KRAS\tdriver_of\tcancer_type:LUAD\n"
NO_HEADER = "gene:KRAS\tdriver_of\tcancer_type:LUAD\n"


@pytest.mark.parametrize(
    ("head", "row", "needle", "line"),
    [
        (
            FULL_HEADER,
            "gene\tTP53\tdrives\tcancer_type\tLUAD\tx",
            "unknown relation 'drives'; valid relations: gene member_of pathway",
            3,
        ),
        (
            FULL_HEADER,
            "protein\tTP53\tdriver_of\tcancer_type\tLUAD\tx",
            "unknown node type 'protein'; valid node types: gene",
            3,
        ),
        (FULL_HEADER, "concept\tsite:lung\tdriver_of\tcancer_type\tLUAD\tx", "cannot link concept to cancer_type", 3),
        (FULL_HEADER, "gene\tTP53\tdriver_of\tcancer_type", "expected 6 tab-separated fields", 3),
        (FULL_HEADER, "gene\t\tdriver_of\tcancer_type\tLUAD\tx", "empty node name", 3),
        (SHORT_HEADER, "TP53\tdriver_of\tcancer_type:LUAD", "typed id like gene:TP53", 3),
        (SHORT_HEADER, "patient:P1\tdriver_of\tcancer_type:LUAD", "unknown node type 'patient'", 3),
        (NO_HEADER, "gene\tTP53\tdriver_of\tcancer_type\tLUAD\tx", "expected 3 tab-separated fields", 2),
    ],
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


# ------------------------------------------------------------------------------------------ OBO, sources, Reactome
OBO = Path(__file__).parent / "fixtures" / "mini_disease.obo"
OBO_SOURCE = "minidisease test/2026-11-23"


def test_add_obo_links_cancer_terms_and_their_descendants():
    kg = KnowledgeGraph.default()
    assert kg.add_obo(OBO) == 6
    indicates = {(s, d) for s, d, label in kg.edges(Node.CONCEPT, Rel.INDICATES, Node.CANCER) if label == OBO_SOURCE}
    assert indicates == {
        ("diagnosis:lung adenocarcinoma", "LUAD"),  # by its name, equal to LUAD's
        ("diagnosis:acinar adenocarcinoma of lung", "LUAD"),  # is_a lung adenocarcinoma
        ("diagnosis:lung squamous cell carcinoma", "LUSC"),  # by its ONCOTREE xref
        ("diagnosis:adenosquamous carcinoma of lung", "LUAD"),  # two parents, two types
        ("diagnosis:adenosquamous carcinoma of lung", "LUSC"),
        ("diagnosis:pleural mesothelioma", "PLMESO"),
    }
    concepts = {c.id: c for c in kg.concepts()}
    assert concepts["diagnosis:lung adenocarcinoma"].synonyms == (
        "adenocarcinoma of the lung",
        "pulmonary adenocarcinoma",
    )
    assert concepts["diagnosis:acinar adenocarcinoma of lung"].synonyms == ("acinar lung adenocarcinoma",)  # NARROW
    assert not {"diagnosis:cancer", "diagnosis:lung carcinoma", "diagnosis:chondroma"} & set(
        concepts
    )  # above / no type
    assert not any("old lung tumour" in cid for cid in concepts)  # obsolete
    assert kg.title(Node.CANCER, "PLMESO") == "pleural mesothelioma"  # a new type from an xref, with its definition
    assert kg.definition(Node.CANCER, "PLMESO") == "A tumour of the pleural mesothelium."
    assert kg.add_obo(OBO) == 0


def test_obo_concepts_link_notes_and_survive_the_round_trip(tmp_path):
    from clinicmm.knowledge.concepts import ConceptMatcher

    kg = KnowledgeGraph.default()
    kg.add_obo(OBO)
    found = {m.concept_id for m in ConceptMatcher(kg.concepts()).find("Final diagnosis: pulmonary adenocarcinoma.")}
    assert "diagnosis:lung adenocarcinoma" in found
    back = KnowledgeGraph.from_files(kg.to_files(tmp_path / "graph"))
    assert back.fingerprint() == kg.fingerprint() and back.concepts() == kg.concepts()


def test_workflow_knowledge_list_takes_obo_gmt_and_tsv(tmp_path):
    from clinicmm.config import WorkflowSpec
    from clinicmm.knowledge.graph import load_knowledge

    (tmp_path / "sets.gmt").write_text("MY_SET\tdesc\tTP53\tMYGENE\n")
    (tmp_path / "edges.tsv").write_text("gene:MYGENE\tdriver_of\tcancer_type:LUAD\tmy lab\n")
    wf = WorkflowSpec(
        name="w",
        dataset=Path("d.yaml"),
        workdir=Path("work"),
        base_dir=tmp_path,
        knowledge=[OBO, Path("sets.gmt"), Path("edges.tsv")],
    )
    kg = load_knowledge(wf)
    assert kg.index(Node.CONCEPT, "diagnosis:pleural mesothelioma") is not None
    assert ("MYGENE", "MY_SET", "sets.gmt") in kg.edges(Node.GENE, Rel.MEMBER_OF, Node.PATHWAY)
    assert ("MYGENE", "LUAD", "my lab") in kg.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER)


def test_bad_obo_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.obo"
    bad.write_text("format-version: 1.2\n\n[Term]\nname: no id here\n")
    with pytest.raises(InputError, match="bad.obo"):
        KnowledgeGraph().add_obo(bad)
    with pytest.raises(InputError, match="file not found"):
        KnowledgeGraph().add_obo(tmp_path / "none.obo")


def test_by_source_counts_every_node_and_edge_once(kg):
    table = KnowledgeGraph.default()
    table.add_obo(OBO)
    table.ensure_nodes(Node.CANCER, ["MYTYPE"])
    by = table.by_source().set_index("source")
    for t in KNOWLEDGE_NODES:
        assert by[t.value].sum() == table.num_nodes(t)
    relations = [c for c in by.columns if c not in {t.value for t in KNOWLEDGE_NODES}]
    for rel in relations:
        assert by[rel].sum() == len(table.edges(*rel.split()))
    assert by.loc["Reactome", "pathway"] == 341 and by.loc["clinicmm cancer types", "cancer_type"] == 33
    assert by.loc[OBO_SOURCE, "cancer_type"] == 1 and by.loc["labels", "cancer_type"] == 1
    assert by.loc[OBO_SOURCE, "concept indicates cancer_type"] == 6


def test_kg_inspect_prints_counts_per_source():
    from typer.testing import CliRunner

    from clinicmm.cli import app

    result = CliRunner().invoke(app, ["kg", "inspect", str(OBO)])
    assert result.exit_code == 0, result.output
    assert "per source" in result.output and OBO_SOURCE in result.output and "clinicmm vocabulary" in result.output
    bad = CliRunner().invoke(app, ["kg", "inspect", "--reactome", "everything"])
    assert bad.exit_code == 1 and "valid: subset, human" in bad.output


def test_shipped_human_reactome_is_larger_and_keeps_the_subset():
    human = KnowledgeGraph.default("human")
    subset = KnowledgeGraph.default()
    assert human.num_nodes(Node.PATHWAY) > 1800 and human.num_nodes(Node.GENE) > 10_000
    members = {(g, p) for g, p, _ in human.edges(Node.GENE, Rel.MEMBER_OF, Node.PATHWAY)}
    assert {
        (g, p)
        for g, p, _ in subset.edges(Node.GENE, Rel.MEMBER_OF, Node.PATHWAY)
        if p in set(human.names(Node.PATHWAY)) and not g.islower()
    } <= members
    assert not any(g.islower() for g in human.names(Node.GENE))  # viral genes (gag, vpr ...) left out


def test_labels_as_hospitals_and_the_gdc_write_them_name_the_graphs_cancer_types():
    """A class is the cancer-type node its label names, however spelled: before, any label but the exact code got an
    empty node of its own, so the graph models silently learnt nothing from the graph about that class."""
    from clinicmm.training.data import add_class_nodes, class_nodes

    kg = KnowledgeGraph.default()
    for label, code in [("KIRC", "KIRC"), ("kirc", "KIRC"), ("TCGA-KIRC", "KIRC"), ("tcga_kirp", "KIRP"),
                        ("CCRCC", "KIRC"), ("HGSOC", "OV"), ("Lung adenocarcinoma", "LUAD"), ("read", "READ"),
                        ("Papillary Renal Cell Carcinoma", "KIRP")]:  # fmt: skip
        assert kg.cancer_node(label) == code, label
    for label in ("AD", "NC", "TCGA", "renal tumour", ""):
        assert kg.cancer_node(label) is None, label
    before = kg.num_nodes(Node.CANCER)
    classes = ["TCGA-KICH", "TCGA-KIRC", "TCGA-KIRP"]
    assert add_class_nodes(kg, classes) == [] and kg.num_nodes(Node.CANCER) == before  # no empty node added
    assert class_nodes(kg, classes).tolist() == [kg.index(Node.CANCER, c) for c in ("KICH", "KIRC", "KIRP")]
    # two classes naming one type keep a node each; a label the graph does not know gets its own (and is reported)
    assert kg.class_node_names(["KIRC", "kirc", "AD"]) == ["KIRC", "kirc", "AD"]
    assert add_class_nodes(kg, ["KIRC", "kirc", "AD"]) == ["kirc", "AD"]
    assert kg.index(Node.CANCER, "kirc") is not None and kg.cancer_node("kirc") == "kirc"  # as a saved model has it
