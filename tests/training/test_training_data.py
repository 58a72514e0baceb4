"""Standardizer (train-only scaling) and to_evidence (vectors and graph links per patient)."""

from __future__ import annotations

import numpy as np
import pytest

from clinicmm.encode.featurizer import EncodedCohort
from clinicmm.fusion.batch import PatientEvidence
from clinicmm.keys import Node
from clinicmm.knowledge.graph import KnowledgeGraph
from clinicmm.training.data import Standardizer, dims_of, to_evidence

TRAIN = np.array([0, 1, 2, 3])


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return KnowledgeGraph.default()


def vectors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.normal(5.0, 3.0, size=(6, 3)),
        "note": rng.normal(-2.0, 0.5, size=(6, 2)),
        "omics": rng.normal(10.0, 4.0, size=(6, 4)),
    }


def test_fit_uses_train_rows_only():
    v = vectors()
    scaler = Standardizer.fit(v, TRAIN)
    np.testing.assert_allclose(scaler.mean["image"], v["image"][TRAIN].mean(axis=0))
    np.testing.assert_allclose(scaler.std["image"], v["image"][TRAIN].std(axis=0))
    changed = {m: a.copy() for m, a in v.items()}
    changed["image"][5] = 1e6  # a val/test row
    changed["note"][4] = -1e6
    other = Standardizer.fit(changed, TRAIN)
    assert other.mean == scaler.mean and other.std == scaler.std


def test_fit_accepts_a_boolean_row_mask():
    v = vectors()
    mask = np.isin(np.arange(6), TRAIN)
    assert Standardizer.fit(v, mask) == Standardizer.fit(v, TRAIN)


def test_fit_ignores_rows_with_nan():
    v = vectors()
    with_nan = {m: a.copy() for m, a in v.items()}
    with_nan["image"][TRAIN[0], 1] = np.nan  # patient without an image: NaN row
    scaler = Standardizer.fit(with_nan, TRAIN)
    np.testing.assert_allclose(scaler.mean["image"], v["image"][TRAIN[1:]].mean(axis=0))
    np.testing.assert_allclose(scaler.std["image"], v["image"][TRAIN[1:]].std(axis=0))
    assert np.isfinite(scaler.mean["image"]).all() and np.isfinite(scaler.std["image"]).all()
    # the other modalities still use every train row
    np.testing.assert_allclose(scaler.mean["note"], v["note"][TRAIN].mean(axis=0))


def test_omics_is_left_as_is():
    v = vectors()
    scaler = Standardizer.fit(v, TRAIN)
    assert scaler.mean["omics"] == [0.0] * 4 and scaler.std["omics"] == [1.0] * 4
    np.testing.assert_allclose(scaler.apply("omics", v["omics"][0]), v["omics"][0], rtol=1e-6)


def test_zero_variance_column_gets_std_one():
    v = vectors()
    v["note"][:, 1] = 7.0
    scaler = Standardizer.fit(v, TRAIN)
    assert scaler.std["note"][1] == 1.0
    assert scaler.mean["note"][1] == pytest.approx(7.0)
    out = scaler.apply("note", v["note"][5])
    assert np.isfinite(out).all() and out[1] == 0.0


def test_apply_standardises_the_train_rows_as_float32():
    v = vectors()
    scaler = Standardizer.fit(v, TRAIN)
    z = np.stack([scaler.apply("image", v["image"][r]) for r in TRAIN])
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-5)


def test_dims_of():
    assert dims_of(vectors()) == {"image": 3, "note": 2, "omics": 4}


# ------------------------------------------------------------------------------------------------ to_evidence


def cohort(kg: KnowledgeGraph) -> EncodedCohort:
    """Three patients: P0 has everything, P1 has no image (NaN row) but links for it, P2 has no omics."""
    concepts, genes = kg.names(Node.CONCEPT), kg.names(Node.GENE)
    v = vectors()
    v = {m: a[:3].copy() for m, a in v.items()}
    v["image"][1] = np.nan
    v["omics"][2] = np.nan
    links = {
        "image": [[concepts[0]], [concepts[1]], []],
        "note": [[concepts[2], "concept:not-in-graph", concepts[3]], [], [concepts[4]]],
        "omics": [[genes[0], "NOT_A_GENE", genes[5]], [genes[1]], [genes[2]]],
    }
    return EncodedCohort(["P0", "P1", "P2"], v, links)


def test_to_evidence_maps_names_to_graph_indices(kg):
    enc = cohort(kg)
    scaler = Standardizer.fit(enc.vectors, np.arange(3))
    items = to_evidence(enc, [0, 1, 2], [2, 0, 1], kg, scaler)
    assert all(isinstance(p, PatientEvidence) for p in items)
    assert [p.label for p in items] == [2, 0, 1]
    p0 = items[0]
    assert p0.image_concepts == [kg.index(Node.CONCEPT, kg.names(Node.CONCEPT)[0])] == [0]
    # unknown names are dropped, known ones kept in order
    assert p0.note_concepts == [
        kg.index(Node.CONCEPT, enc.links["note"][0][0]),
        kg.index(Node.CONCEPT, enc.links["note"][0][2]),
    ]
    assert p0.omics_genes == [
        kg.index(Node.GENE, enc.links["omics"][0][0]),
        kg.index(Node.GENE, enc.links["omics"][0][2]),
    ]
    assert None not in p0.note_concepts + p0.omics_genes
    np.testing.assert_allclose(p0.image, scaler.apply("image", enc.vectors["image"][0]))
    assert p0.image.dtype == np.float32


def test_to_evidence_missing_modality_is_none_without_links(kg):
    enc = cohort(kg)
    scaler = Standardizer.fit(enc.vectors, np.arange(3))
    p0, p1, p2 = to_evidence(enc, [0, 1, 2], [0, 0, 0], kg, scaler)
    assert p1.image is None and p1.image_concepts == []  # NaN vector: its links are not used either
    assert p1.note is not None and p1.omics_genes == [kg.index(Node.GENE, enc.links["omics"][1][0])]
    assert p2.omics is None and p2.omics_genes == []
    assert p2.note_concepts == [kg.index(Node.CONCEPT, enc.links["note"][2][0])]


def test_to_evidence_follows_the_given_rows_and_unknown_labels(kg):
    enc = cohort(kg)
    scaler = Standardizer.fit(enc.vectors, np.arange(3))
    items = to_evidence(enc, [2, 0], [-1, -1], kg, scaler)
    assert [p.label for p in items] == [-1, -1]
    np.testing.assert_allclose(items[0].note, scaler.apply("note", enc.vectors["note"][2]))
    np.testing.assert_allclose(items[1].note, scaler.apply("note", enc.vectors["note"][0]))
    assert to_evidence(enc, [], [], kg, scaler) == []


def test_each_linear_input_column_is_named_by_its_modality_or_omics_layer() -> None:
    """``training.linear_blocks``: the blocks of logreg's columns follow the encoded layout — image, note, then each
    omics feature's table (``<layer>:`` columns by their layer, the expression table's as one), then the three
    presence flags (no block); an omics vector that does not match the description stays one block."""
    import pandas as pd

    from clinicmm.config import GenomicsEncoderSpec
    from clinicmm.encode.genomics import GenomicsPreprocessor
    from clinicmm.training.data import input_blocks

    rng = np.random.default_rng(0)
    matrix = pd.DataFrame(rng.normal(size=(8, 5)), columns=["EGFR", "MIR21", "mrna:TP53", "cnv:17q12", "cnv:8q24.21"],
                          index=pd.Index([f"P{i}" for i in range(8)], name="patient_id"))  # fmt: skip
    pre = GenomicsPreprocessor.from_spec("log", GenomicsEncoderSpec(), layer_units={"mrna": "log", "cnv": "log"},
                                         region_layers=["cnv"])  # fmt: skip
    pre.fit(matrix, None)
    dims = {"image": 2, "note": 3, "omics": pre.dim}
    blocks = input_blocks(dims, pre.to_dict())
    by_gene = dict(zip(pre.genes, blocks[5 : 5 + pre.dim], strict=True))
    # an MIR gene among the expression columns is the expression table's, not a miRNA layer of its own
    assert by_gene == {"EGFR": "omics:expression", "MIR21": "omics:expression", "mrna:TP53": "omics:mrna",
                       "cnv:17q12": "omics:cnv", "cnv:8q24.21": "omics:cnv"}  # fmt: skip
    assert blocks[:5] == ["image"] * 2 + ["note"] * 3 and blocks[-3:] == [None] * 3
    assert input_blocks({"image": 2, "note": 3, "omics": 7}, pre.to_dict())[5:12] == ["omics"] * 7
