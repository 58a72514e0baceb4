"""Per-prediction explanations: occlusion scores match a one-patient recomputation, paths follow the graph."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from clinicmm.fusion.batch import PatientEvidence, build_batch, schema
from clinicmm.fusion.models.concat import ConcatFusion
from clinicmm.fusion.models.kg_gnn import KGGNNFusion
from clinicmm.fusion.models.kg_rgcn import KGRGCNFusion
from clinicmm.keys import Node
from clinicmm.knowledge.graph import KnowledgeGraph
from clinicmm.serve.explain import (
    COLUMNS,
    MIN_SCORE,
    _paths,
    add_explanations,
    columns,
    explain,
    write_explanations,
)

DIMS = {"image": 8, "note": 6, "omics": 10}
CLASSES = ["LUAD", "LUSC", "THCA"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    g = KnowledgeGraph()
    g.add_nodes([])
    for c, genes in zip(CLASSES, (["KRAS", "EGFR"], ["SOX2", "TP63"], ["BRAF", "RET"])):
        for gene in genes:
            g.add_edge("gene", gene, "driver_of", "cancer_type", c, "test")
        g.add_edge("concept", f"histology:{c.lower()}", "indicates", "cancer_type", c, "test")
    for gene, pathway in (("KRAS", "MAPK"), ("NRAS", "MAPK"), ("GENE1", "MISC"), ("GENE2", "MISC")):
        g.add_edge("gene", gene, "member_of", "pathway", pathway, "test")
    return g


def items(kg: KnowledgeGraph, n: int = 7, seed: int = 0) -> list[PatientEvidence]:
    rng = np.random.default_rng(seed)
    genes = kg.names(Node.GENE)
    out = []
    for i in range(n):
        vec = {m: rng.normal(size=d).astype(np.float32) for m, d in DIMS.items()}
        if i % 3 == 2:
            vec["image"] = None
        linked = sorted(rng.choice(len(genes), 3, replace=False).tolist())
        out.append(
            PatientEvidence(
                -1,
                vec["image"],
                vec["note"],
                vec["omics"],
                [0] if vec["image"] is not None else [],
                [int(rng.integers(kg.num_nodes(Node.CONCEPT)))],
                linked,
            )
        )
    return out


def model_for(cls, kg: KnowledgeGraph, seed: int = 0, dims: dict = DIMS, omics_genes=None):
    """``cls`` on ``kg`` scoring CLASSES, and ``kg`` as HeteroData; with ``omics_genes`` (every omics feature an
    expression value) the model gets its gene-set read-in."""
    torch.manual_seed(seed)
    hetero = kg.to_hetero()
    nodes = torch.tensor([kg.index(Node.CANCER, c) for c in CLASSES])
    num = {t: int(hetero[t].num_nodes) for t in ("gene", "pathway", "cancer_type", "concept")}
    sets = (
        {} if omics_genes is None else {"knowledge": hetero, "omics_genes": omics_genes, "n_expression": dims["omics"]}
    )
    return cls(dims, len(CLASSES), num, nodes, schema(dims), hidden=16, **sets).eval(), hetero


@pytest.mark.parametrize("cls", [KGGNNFusion, KGRGCNFusion, "ensemble"])
def test_link_scores_equal_a_one_patient_recomputation(kg, cls):
    if cls == "ensemble":  # training.ensemble: scores are drops of the members' mean prediction
        from clinicmm.fusion.models.wrappers import SeedEnsemble

        (first, hetero), (second, _) = model_for(KGGNNFusion, kg), model_for(KGGNNFusion, kg, seed=1)
        model = SeedEnsemble([first, second]).eval()
    else:
        model, hetero = model_for(cls, kg)
    patients = items(kg)
    found = explain(model, patients, hetero, DIMS, kg, CLASSES, batch_size=4)  # two batches
    assert len(found) == len(patients)
    genes = kg.names(Node.GENE)
    for p, e in zip(patients, found):
        with torch.no_grad():
            logp = model(build_batch(hetero, [p], DIMS)).log_softmax(1)[0]
            pred = int(logp.argmax())
            assert e["predicted"] == CLASSES[pred]
            assert e["probability"] == pytest.approx(float(logp[pred].exp()), abs=1e-4)
            assert {g["gene"] for g in e["genes"]} == {genes[i] for i in p.omics_genes}
            for g in e["genes"]:
                rest = [i for i in p.omics_genes if genes[i] != g["gene"]]
                alone = PatientEvidence(-1, p.image, p.note, p.omics, p.image_concepts, p.note_concepts, rest)
                cut = model(build_batch(hetero, [alone], DIMS)).log_softmax(1)[0]
                # the drop of the log-odds log p / (1 - p) of the predicted class
                drop = (logp[pred] - torch.log1p(-logp[pred].exp())) - (cut[pred] - torch.log1p(-cut[pred].exp()))
                assert g["score"] == pytest.approx(float(drop), abs=2e-4)
        assert [g["score"] for g in e["genes"]] == sorted((g["score"] for g in e["genes"]), reverse=True)
        share = e["modality_share"]
        assert share["image"] == 0 if p.image is None else share["image"] >= 0
        assert sum(share.values()) == pytest.approx(1.0, abs=1e-3)


def graph_taught(kg: KnowledgeGraph, n: int = 48) -> tuple[list[PatientEvidence], list[int]]:
    """Patients whose class shows only in the graph: omics links to one of its drivers plus an unrelated gene."""
    rng = np.random.default_rng(1)
    drivers = {
        c: [kg.index(Node.GENE, g) for g, d, _ in kg.edges("gene", "driver_of", "cancer_type") if d == c]
        for c in CLASSES
    }
    noise = [kg.index(Node.GENE, g) for g in ("GENE1", "GENE2")]
    out, labels = [], []
    for i in range(n):
        label = i % len(CLASSES)
        vec = {m: rng.normal(size=d).astype(np.float32) for m, d in DIMS.items()}
        genes = sorted([int(rng.choice(drivers[CLASSES[label]])), int(rng.choice(noise))])
        out.append(PatientEvidence(label, vec["image"], vec["note"], vec["omics"], [], [], genes))
        labels.append(label)
    return out, labels


def test_paths_follow_graph_edges_to_the_predicted_type(kg):
    model, hetero = model_for(KGGNNFusion, kg)
    patients, labels = graph_taught(kg)
    batch = build_batch(hetero, patients, DIMS)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), torch.tensor(labels)).backward()
        opt.step()
    found = explain(model, patients[:12], hetero, DIMS, kg, CLASSES)
    assert np.mean([e["predicted"] == CLASSES[y] for e, y in zip(found, labels)]) > 0.8
    edges = {(s, d) for et in kg.edge_types() for s, d, _ in kg.edges(*et)}
    paths = [p for e in found for p in e["paths"]]
    assert paths, "some patient should have a positive link with a path to its class"
    for e in found:
        weights = [p["weight"] for p in e["paths"]]
        assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)
        for p in e["paths"]:
            nodes = p["nodes"]
            assert nodes[:2] in (["patient", "omics"], ["patient", "note"], ["patient", "image"])
            assert nodes[-1] == f"cancer_type:{e['predicted']}" and p["path"].endswith(nodes[-1])
            names = [n.partition(":")[2] for n in nodes[2:]]
            assert all((a, b) in edges or (b, a) in edges for a, b in zip(names, names[1:]))


def test_models_without_the_graph_report_shares_only(kg):
    hetero = kg.to_hetero()
    model = ConcatFusion(DIMS, len(CLASSES), hidden=16).eval()
    found = explain(model, items(kg, n=3), hetero, DIMS, kg, CLASSES)
    assert all(e["genes"] == [] and e["concepts"] == [] and e["paths"] == [] for e in found)
    assert found[2]["modality_share"] == {"image": 0.0, "note": 0.5, "omics": 0.5}


def test_compact_columns_and_per_row_json(kg, tmp_path):
    class Bundle:
        knowledge, dims, classes = kg, DIMS, CLASSES

    model, _ = model_for(KGGNNFusion, kg)
    patients = items(kg, n=3)
    result = pd.DataFrame(
        {"patient_id": ["P1", "P2", "P3", "P4"], "status": ["scored", "not scored", "scored", "scored"]}
    )
    result = add_explanations(result, model, [patients[0], patients[1], patients[2]], [0, 2, 3], Bundle)
    assert set(COLUMNS) <= set(result.columns)
    assert result.loc[1, "explanation"] == "" and np.isnan(result.loc[1, "share_omics"])
    first = json.loads(result.loc[0, "explanation"])
    assert result.loc[0, "share_omics"] == first["modality_share"]["omics"]
    assert result.loc[0, "top_genes"] == "|".join(
        f"{g['gene']}:{g['score']:.3g}" for g in first["genes"][:5] if g["score"] >= MIN_SCORE
    )
    assert columns(None)["top_path"] == ""
    out = write_explanations(result, tmp_path / "preds.csv")
    assert "explanation" not in out.columns
    assert list(out["explanation_file"]) == [
        "preds_explanations/row_00001.json",
        "",
        "preds_explanations/row_00003.json",
        "preds_explanations/row_00004.json",
    ]
    saved = json.loads((tmp_path / out.loc[2, "explanation_file"]).read_text())
    assert saved["row"] == 3 and saved["patient_id"] == "P3" and "modality_share" in saved


def test_links_below_the_minimum_score_are_not_listed_as_support(kg):
    scored = {"modality_share": {"image": 0.0, "note": 0.5, "omics": 0.5}, "paths": []}
    scored["genes"] = [
        {"gene": "KRAS", "score": 0.5},
        {"gene": "EGFR", "score": 0.009},
        {"gene": "BRAF", "score": -1.0},
    ]
    scored["concepts"] = [{"concept": "histology:luad", "via": "note", "score": 0.0099}]
    out = columns(scored)
    assert out["top_genes"] == "KRAS:0.5" and out["top_concepts"] == ""
    strong = _paths(kg, [("omics", "KRAS", MIN_SCORE)], "LUAD", {})
    assert [p["nodes"][-1] for p in strong] == ["cancer_type:LUAD"]
    assert _paths(kg, [("omics", "KRAS", MIN_SCORE / 2), ("note", "histology:luad", 0.001)], "LUAD", {}) == []


SET_DIMS = {"image": 4, "note": 3, "omics": 7}  # omics: 3 genes of pathway UP, 3 of pathway DOWN, one unlinked


@pytest.fixture(scope="module")
def set_kg() -> KnowledgeGraph:
    g = KnowledgeGraph()
    g.add_nodes([])
    for c in CLASSES:
        g.add_edge("concept", f"histology:{c.lower()}", "indicates", "cancer_type", c, "test")
    for gene, pathway in [(f"A{i}", "UP") for i in range(3)] + [(f"B{i}", "DOWN") for i in range(3)]:
        g.add_edge("gene", gene, "member_of", "pathway", pathway, "test")
    return g


def test_gene_set_scores_equal_leaving_the_set_out_of_the_read_in(set_kg):
    """Leave-one-set-out of kg_gnn's gene-set read-in: each listed set's score is the drop of the predicted class's
    log-odds when that set's pooled values are zeroed (recomputed here through a hook on the pooling, one patient at
    a time); patients without omics, and models without a read-in, list none."""
    genes = [set_kg.index(Node.GENE, g) for g in ("A0", "A1", "A2", "B0", "B1", "B2")] + [-1]
    model, hetero = model_for(KGGNNFusion, set_kg, dims=SET_DIMS, omics_genes=genes)
    assert model.gene_sets.num_sets == 2
    rng = np.random.default_rng(0)
    patients = [
        PatientEvidence(-1, None, rng.normal(size=3).astype(np.float32), rng.normal(size=7).astype(np.float32) * 2)
        for _ in range(4)
    ] + [PatientEvidence(-1, np.ones(4, dtype=np.float32), None, None)]
    found = explain(model, patients, hetero, SET_DIMS, set_kg, CLASSES)
    names = dict(enumerate(name for _, name in model.gene_sets.set_names(set_kg)))
    assert found[4]["gene_sets"] == []  # no omics: nothing pooled
    for p, e in zip(patients[:4], found):
        assert {g["set"] for g in e["gene_sets"]} == {"UP", "DOWN"} and {g["type"] for g in e["gene_sets"]} == {
            "pathway"
        }
        batch = build_batch(hetero, [p], SET_DIMS)
        with torch.no_grad():
            logits = model(batch)
            pred = int(logits.argmax())
            for g in e["gene_sets"]:
                s = next(i for i, n in names.items() if n == g["set"])
                columns = [s, 2 + s, 4 + s]  # up, down, mutated of set s

                def zero(_, __, out, columns=columns):
                    out = out.clone()
                    out[:, columns] = 0
                    return out

                hook = model.gene_sets.pool.register_forward_hook(zero)
                try:
                    cut = model(batch)
                finally:
                    hook.remove()
                odds = [
                    x[0, pred] - torch.logsumexp(torch.cat([x[0, :pred], x[0, pred + 1 :]]), 0) for x in (logits, cut)
                ]
                assert g["score"] == pytest.approx(float(odds[0] - odds[1]), abs=2e-4)
    plain, _ = model_for(KGGNNFusion, set_kg, dims=SET_DIMS)  # no read-in
    assert all(e["gene_sets"] == [] for e in explain(plain, patients, hetero, SET_DIMS, set_kg, CLASSES))


def test_gene_sets_below_the_minimum_score_are_not_listed():
    shown = {"modality_share": {"image": 0.0, "note": 0.0, "omics": 1.0}, "genes": [], "concepts": [], "paths": []}
    shown["gene_sets"] = [
        {"set": "Signaling by ERBB2: ligand", "type": "pathway", "score": 0.2},
        {"set": "MISC", "type": "pathway", "score": 0.001},
    ]
    assert columns(shown)["top_gene_sets"] == "Signaling by ERBB2: ligand:0.2"
    del shown["gene_sets"]  # an explanation written before the read-in existed
    assert columns(shown)["top_gene_sets"] == ""
