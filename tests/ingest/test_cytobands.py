"""Copy number by chromosome arm or band (``features: cytoband``): the names are read as bands, each stands for the
genes HGNC locates inside it, and the gene-set models pool such a feature once per member gene it covers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import HeteroData

from clinicmm.config import DatasetSpec, GenomicsEncoderSpec
from clinicmm.encode.genomics import REGION, GenomicsPreprocessor, feature_genes, link_gene
from clinicmm.fusion.models.kg_pathway import GeneSetPooling, gene_sets
from clinicmm.ingest.cytobands import GeneLocations, parse_band
from clinicmm.ingest.genomics import gene_counts, genomics_issues, read_genomics
from clinicmm.keys import Node, Rel


@pytest.mark.parametrize(
    ("name", "band"),
    [("8q", ("8", "q", "")), ("chr8q", ("8", "q", "")), ("CHR1p", ("1", "p", "")), ("8q24.21", ("8", "q", "24.21")),
     ("Xp", ("X", "p", "")), ("22q11", ("22", "q", "11")), ("TP53", None), ("8", None), ("8q22-q24", None),
     ("23q", None), ("MIR21", None), ("", None), ("ENSG00000141510", None)],
)  # fmt: skip
def test_arm_and_band_names_are_read_and_nothing_else(name: str, band) -> None:
    assert parse_band(name) == band


def test_a_band_covers_the_genes_located_inside_it_by_the_nomenclature_s_hierarchy() -> None:
    table = pd.DataFrame(
        {
            "symbol": ["A", "B", "C", "D", "E", "F", "PAR"],
            "location": ["17q21.31", "17q21.1", "17q22", "17p13.1", "17q11.2", "1p36.33-p36.32", "Xp22.33 and Yp11.2"],
        }
    )
    loc = GeneLocations(table)
    assert loc.genes_in("17q") == ["A", "B", "C", "E"]
    assert loc.genes_in("17q21") == ["A", "B"]
    assert loc.genes_in("17q21.3") == ["A"]
    assert loc.genes_in("17q2") == ["A", "B", "C"]  # region 2: bands 21, 22 ... not 11
    assert loc.genes_in("17p") == ["D"] and loc.genes_in("chr1p36.33") == ["F"]  # a range counts where it starts
    assert loc.genes_in("Xp") == ["PAR"] and loc.genes_in("Yp11") == ["PAR"]
    assert loc.genes_in("TP53") == [] and loc.genes_in("18q") == []


def test_the_shipped_locations_put_known_genes_on_their_arms() -> None:
    loc = GeneLocations.shipped()
    assert "TP53" in loc.genes_in("17p13.1") and "TP53" in loc.genes_in("17p") and "TP53" not in loc.genes_in("17q")
    assert "MYC" in loc.genes_in("8q24.21") and "ERBB2" in loc.genes_in("17q12") and "CDKN2A" in loc.genes_in("9p")
    assert 200 < len(loc.genes_in("8q")) < 2000


def test_arm_columns_of_a_cytoband_layer_are_regions_that_stand_for_their_graph_genes() -> None:
    graph, regions = {"MYC", "TP53", "PVT1", "EGFR"}, ("cnv",)
    assert link_gene("cnv:8q", graph, regions=regions) == (None, REGION)
    assert sorted(feature_genes("cnv:8q", graph, regions=regions)) == ["MYC", "PVT1"]
    assert feature_genes("cnv:17p", graph, regions=regions) == ["TP53"]
    assert feature_genes("cnv:18q", graph, regions=regions) == []
    assert feature_genes("TP53", graph, regions=regions) == ["TP53"]
    assert feature_genes("cnv:TP53", graph, regions=regions) == ["TP53"]
    # only a layer declared `features: cytoband` is read so: elsewhere "8q" is a name that names no gene
    assert link_gene("cnv:8q", graph) == (None, "unmapped") and feature_genes("8q", graph, regions=regions) == []


def _graph(members: dict[str, list[int]], genes: int) -> HeteroData:
    """A graph with ``genes`` gene nodes and one pathway per entry, its members by gene index."""
    data = HeteroData()
    data[Node.GENE.value].num_nodes = genes
    data[Node.PATHWAY.value].num_nodes = len(members)
    edges = [(g, p) for p, gs in enumerate(members.values()) for g in gs]
    data[Node.GENE.value, Rel.MEMBER_OF.value, Node.PATHWAY.value].edge_index = torch.tensor(edges).T
    return data


def test_a_region_feature_pools_as_its_member_genes_with_its_value_would() -> None:
    graph = _graph({"p0": [0, 1, 2, 3], "p1": [3, 4, 5]}, genes=6)
    # feature 0 is an arm covering genes 0, 1, 2 (3 members of p0), feature 1 is gene 3, feature 2 gene 4
    region = GeneSetPooling(graph, [[0, 1, 2], 3, 4], None, dim=3)
    # the same patient measured per gene: genes 0, 1, 2 each carry the arm's value
    per_gene = GeneSetPooling(graph, [0, 1, 2, 3, 4], None, dim=5)
    x = torch.tensor([[1.5, -0.7, 2.2], [-2.0, 0.3, 0.0]])
    expanded = x[:, [0, 0, 0, 1, 2]]
    assert region.num_sets == 1  # p1 has 2 measured members (genes 3, 4): fewer than MIN_MEMBERS
    torch.testing.assert_close(region(x), per_gene(expanded))
    index = gene_sets(graph, [[0, 1, 2], 3, 4], 3)
    assert index["feature"].tolist() == [0, 0, 0, 1] and index["set"].tolist() == [0, 0, 0, 0]


def test_a_cytoband_layer_is_read_counted_and_pooled_over_the_genes_of_its_arms(tmp_path: Path) -> None:
    (tmp_path / "arms.tsv").write_text(
        "sample_id\t8q\t17p\tchr9p\tWGD\nP1\t0.5\t-1.0\t-0.4\t1\nP2\t0.0\t0.2\t0.1\t0\nP3\t-0.3\t0.1\t-1.2\t1\n"
    )
    spec = DatasetSpec(
        name="arms",
        base_dir=tmp_path,
        genomics={"layers": [{"name": "cnv", "kind": "copy_number", "path": "arms.tsv", "unit": "log",
                              "features": "cytoband"}]},
    )  # fmt: skip
    tables = read_genomics(spec)
    matrix = tables["expression"]
    assert list(matrix.columns) == ["cnv:8q", "cnv:17p", "cnv:chr9p", "cnv:WGD"]  # names kept as given
    counts = gene_counts(tables)["expression"]
    assert counts["cnv_features"] == 4 and counts["cnv_regions"] == 3
    issues = genomics_issues(tables)
    assert any("1 of 4 cnv columns name no chromosome arm or band" in line for line in issues)
    assert not any("WGD" in line for line in issues)  # counted, not echoed
    pre = GenomicsPreprocessor.from_spec("log", GenomicsEncoderSpec(), layer_units={"cnv": "log"},
                                         region_layers=["cnv"])  # fmt: skip
    pre.fit(matrix, None)
    assert GenomicsPreprocessor.from_dict(pre.to_dict()).region_layers == ["cnv"]
    graph = {"MYC", "PVT1", "TP53", "CDKN2A", "EGFR"}
    counts = pre.link_counts(graph)
    assert counts["features_region_cnv"] == 3 and counts["features_unmapped_cnv"] == 1
    links = pre.evidence(matrix, None, ["P1", "P2", "P3"], graph)
    assert all(links[p] == [] for p in links)  # an arm is no single gene: no per-patient link
    assert np.isfinite(pre.zscores(matrix, ["P1"]).to_numpy()).all()


def test_kg_pathway_pools_an_arm_layer_and_its_bundle_rebuilds_the_same_sets(
    genomics_cohort, genomics_workflow, tmp_path, caplog
) -> None:
    """End to end: a cohort with arm-level copy number (``features: cytoband``) trains a kg_pathway whose gene sets
    include the arms' genes; the bundle's genomics description names the layer, so the served model rebuilds the same
    sets; a description without it (a model saved before arm layers were read) rebuilds without them, and these
    weights do not fit that model: a ModelError, not a crash."""
    import json

    import yaml

    from clinicmm.errors import ModelError
    from clinicmm.fusion.models.wrappers import networks_of
    from clinicmm.pipeline import stages
    from clinicmm.tracking.bundle import ModelBundle
    from clinicmm.training.data import TrainingData, omics_gene_index

    dataset = genomics_cohort(tmp_path, 40)
    rng = np.random.default_rng(1)
    arms = ["1p", "1q", "7p", "7q", "8q", "9p", "17p", "17q", "19q"]
    ids = pd.read_csv(tmp_path / "data" / "labels.csv")["patient_id"]
    pd.DataFrame(rng.normal(size=(len(ids), len(arms))), columns=arms).assign(sample_id=ids).to_csv(
        tmp_path / "data" / "arms.tsv", sep="\t", index=False
    )
    spec = yaml.safe_load(dataset.read_text())
    spec["genomics"]["layers"] = [
        {"name": "arms", "kind": "copy_number", "path": "arms.tsv", "unit": "log", "features": "cytoband"}
    ]
    dataset.write_text(yaml.safe_dump(spec))
    wf = genomics_workflow(tmp_path, "arms", ["kg_pathway"])
    with caplog.at_level(logging.INFO, logger="clinicmm"):
        for stage in ("ingest", "encode", "train"):
            stages.FUNCTIONS[stage](wf, False)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("omics:")]
    assert said and all("9 name a chromosome arm or band" in line for line in said)
    data = TrainingData(wf)
    genes, _ = omics_gene_index(data.genomics, data.kg, "kg_pathway")
    covered = [e for e in genes if isinstance(e, list)]
    assert len(covered) >= 5 and all(len(e) >= 1 for e in covered)  # arms that hold graph genes
    folder = wf.work / "train" / "kg_pathway"
    bundle = ModelBundle.load(folder)
    assert bundle.genomics["region_layers"] == ["arms"]
    pooled = networks_of(bundle.build_model())[0].pool
    older = {k: v for k, v in bundle.genomics.items() if k != "region_layers"}
    plain, _ = omics_gene_index(older, data.kg, "kg_pathway")
    assert not any(isinstance(e, list) for e in plain)
    assert pooled.num_sets > GeneSetPooling(data.kg.to_hetero(), plain, None, len(plain)).num_sets
    (folder / "genomics.json").write_text(json.dumps(older))
    with pytest.raises(ModelError, match="weights do not fit"):
        ModelBundle.load(folder).build_model()


def test_every_shipped_gene_lies_in_each_coarser_band_of_its_location_and_no_other_arm() -> None:
    """The hierarchy on the shipped table: a gene located at 17q21.31 is in 17q21.3, 17q21, 17q2 and 17q (every
    prefix of its band), and in no other arm; checked for a spread of real genes."""
    from importlib import resources

    from clinicmm.ingest.cytobands import SHIPPED_LOCATIONS

    source = resources.files("clinicmm.ingest") / "data" / SHIPPED_LOCATIONS
    table = pd.read_csv(str(source), sep="\t", dtype=str, keep_default_na=False)
    loc = GeneLocations.shipped()
    checked = 0
    for symbol, location in table.iloc[::997].itertuples(index=False):
        band = parse_band(location)  # plain single-band locations only (ranges and PAR genes are tested above)
        if band is None:
            continue
        chromosome, arm, digits = band
        for cut in range(len(digits) + 1):
            assert symbol in loc.genes_in(f"{chromosome}{arm}{digits[:cut].rstrip('.')}")
        other = "q" if arm == "p" else "p"
        assert symbol not in loc.genes_in(f"{chromosome}{other}")
        checked += 1
    assert checked >= 30


def test_an_arm_level_table_declared_as_genes_is_kept_and_the_report_says_to_declare_it_cytoband(
    tmp_path: Path,
) -> None:
    (tmp_path / "arms.tsv").write_text("sample_id\t1p\t8q\t17p\tTP53\nP1\t0.5\t-1.0\t-0.4\t1\nP2\t0.0\t0.2\t0.1\t0\n")
    (tmp_path / "genes.tsv").write_text(
        "sample_id\tTP53\tMYC\tEGFR\t8q\nP1\t0.5\t-1.0\t1\t-0.4\nP2\t0.0\t0.2\t2\t0.1\n"
    )

    def issues_of(path: str, features: str) -> list[str]:
        layer = {"name": "cnv", "kind": "copy_number", "path": path, "unit": "log", "features": features}
        tables = read_genomics(DatasetSpec(name="arms", base_dir=tmp_path, genomics={"layers": [layer]}))
        assert tables["expression"].shape == (2, 4)  # every column kept, whatever the hint says
        return [line for line in genomics_issues(tables) if "arms or bands" in line]

    (hint,) = issues_of("arms.tsv", "gene")
    assert "3 of 4 cnv columns" in hint and "features: cytoband" in hint and "features: gene" in hint
    assert "1p" not in hint.split("(")[0] and "17p" not in hint  # counted, the columns not echoed
    assert issues_of("arms.tsv", "cytoband") == []  # declared: read as regions, no hint
    assert issues_of("genes.tsv", "gene") == []  # one arm among genes: a gene table, no hint
