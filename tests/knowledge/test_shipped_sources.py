"""The shipped graph holds only sourced, licensed edges; the demo's invented edges come only from the demo.

``SOURCES.md`` lists each shipped file with its licence (the table) and each ``source`` value of ``edges.tsv``
(the bullets). ``KnowledgeGraph.default()`` must carry nothing else; the demo cohort's programme links reach a
graph only through the demo workflow's ``knowledge:`` list, like a hospital's own files.
"""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

import pytest

from clinicmm.config import load_workflow
from clinicmm.demo.design import CANCER_TYPES, PROGRAMMES, demo_edges_rows, programme_pool
from clinicmm.demo.generator import EDGES, demo_edges, generate_demo
from clinicmm.keys import KNOWLEDGE_NODES, Node, Rel
from clinicmm.knowledge.graph import REACTOME, KnowledgeGraph, load_knowledge
from clinicmm.knowledge.loaders import read_triples

ROOT = Path(__file__).resolve().parents[2]
DATA = resources.files("clinicmm.knowledge").joinpath("data")
DEMO_LABEL = "clinicmm demo programme"


def _sources_md() -> str:
    return DATA.joinpath("SOURCES.md").read_text(encoding="utf-8")


def _licences() -> dict[str, tuple[str, str]]:
    """SOURCES.md's table: shipped file -> (the row's text, its licence cell)."""
    rows = {}
    for line in _sources_md().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) == 4:
            rows[cells[0].strip("`")] = (line, cells[3])
    return rows


def _edge_sources() -> set[str]:
    """The ``source`` values of edges.tsv that SOURCES.md describes (its ``* `label` -- ...`` bullets)."""
    return set(re.findall(r"^\* `([^`]+)` --", _sources_md(), flags=re.MULTILINE))


def _licence_of(label: str) -> str:
    """The licence SOURCES.md gives for an edge source label: an edges.tsv source, or one a table row names."""
    licences = _licences()
    if label in _edge_sources():
        return licences["edges.tsv"][1]
    named = {lic for row, lic in licences.values() if re.search(rf"\b{re.escape(label)}\b", row)}
    assert len(named) == 1, f"source {label!r}: SOURCES.md names it with licences {named or 'none'}"
    return named.pop()


def _edges(kg: KnowledgeGraph) -> set[tuple[str, str, str, str, str, str]]:
    return {(s, a, r, d, b, label) for s, r, d in kg.edge_types() for a, b, label in kg.edges(s, r, d)}


@pytest.fixture(scope="module")
def default() -> KnowledgeGraph:
    return KnowledgeGraph.default()


@pytest.fixture(scope="module")
def demo_rows() -> set[tuple[str, str, str, str, str, str]]:
    """The rows of the demo's own edges file, as shipped with the demo generator."""
    with resources.as_file(demo_edges()) as path:
        return {
            (t.src_type.value, t.src, t.relation.value, t.dst_type.value, t.dst, t.source) for t in read_triples(path)
        }


@pytest.fixture(scope="module")
def demo_workflow(tmp_path_factory: pytest.TempPathFactory):
    """workflows/demo.yaml next to a generated demo cohort, laid out as in the repository (``../demo_data``)."""
    root = tmp_path_factory.mktemp("repo")
    generate_demo(root / "demo_data", patients=6, missing_rate=0.0, slices=2, size=16)
    (root / "workflows").mkdir()
    shutil.copy(ROOT / "workflows" / "demo.yaml", root / "workflows" / "demo.yaml")
    return root, load_workflow(root / "workflows" / "demo.yaml")


# ---------------------------------------------------------------------------------------- shipped files
def test_sources_md_gives_every_shipped_file_a_licence():
    licences = _licences()
    shipped = {p.name for p in DATA.iterdir() if p.name.endswith((".tsv", ".gmt"))}
    assert shipped <= set(licences), shipped - set(licences)
    assert all(licence for _, licence in licences.values()), licences
    assert _edge_sources() == {"TCGA marker papers", "clinicmm curated"}


def test_every_shipped_edges_row_names_a_listed_licensed_source_and_none_mentions_the_demo():
    text = DATA.joinpath("edges.tsv").read_text(encoding="utf-8")
    assert "demo" not in text.lower()
    with resources.as_file(DATA.joinpath("edges.tsv")) as path:
        triples = read_triples(path)
    assert len(triples) == len([line for line in text.splitlines() if line.strip()]) - 1  # every row but the header
    for t in triples:
        assert t.source and t.source in _edge_sources(), t
        assert _licence_of(t.source), t


@pytest.mark.parametrize("reactome", sorted(REACTOME))
def test_every_default_graph_edge_has_a_source_listed_with_a_licence(reactome, default):
    kg = default if reactome == "subset" else KnowledgeGraph.default(reactome)
    labels = {label for *_, label in _edges(kg)}
    assert "" not in labels
    assert not any("demo" in label.lower() for label in labels), labels
    assert {label: bool(_licence_of(label)) for label in labels} == dict.fromkeys(labels, True)
    assert labels == {"Reactome", "TCGA marker papers", "clinicmm curated"}


# ----------------------------------------------------------------------------------- the demo's edges
def test_demo_edges_are_the_programme_links_the_sourced_edges_lack(default, demo_rows):
    sourced = {(a, b) for a, b, _ in default.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER)}
    for src_type, gene, relation, dst_type, code, label in demo_rows:
        assert (src_type, relation, dst_type, label) == ("gene", "driver_of", "cancer_type", DEMO_LABEL)
        programmes = {ct.programme for ct in CANCER_TYPES if ct.code == code}
        assert any(gene in programme_pool(p) for p in programmes), gene
        assert (gene, code) not in sourced  # only where the papers give no such edge
    assert len(demo_rows) == len(set(demo_edges_rows()) - sourced)


def test_generated_cohort_carries_the_demo_edges_file(demo_workflow):
    root, wf = demo_workflow
    written = root / "demo_data" / EDGES
    assert written.read_bytes() == demo_edges().read_bytes()
    assert [wf.resolve(p) for p in wf.knowledge] == [written.resolve()]


def test_demo_workflow_adds_exactly_the_demo_edges_to_the_default_graph(demo_workflow, default, demo_rows):
    _, wf = demo_workflow
    kg = load_knowledge(wf)
    before, after = _edges(default), _edges(kg)
    assert before <= after
    assert after - before == demo_rows
    assert len(after) == len(before) + len(demo_rows)
    assert [kg.names(t) for t in KNOWLEDGE_NODES] == [default.names(t) for t in KNOWLEDGE_NODES]  # no new node
    # the demo's design: every programme gene points at both cancer types of its programme
    drivers = {(a, b) for a, b, _ in kg.edges(Node.GENE, Rel.DRIVER_OF, Node.CANCER)}
    for key in PROGRAMMES:
        types = [ct.code for ct in CANCER_TYPES if ct.programme == key]
        assert len(types) == 2
        for gene in programme_pool(key):
            for code in types:
                assert (gene, code) in drivers, (gene, code)
